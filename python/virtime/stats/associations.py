"""Feature × clinical-attribute associations at pan-cancer, cancer-type and subtype level.

For every group that is large enough, each feature is tested against each attribute: binary
biomarkers by Mann–Whitney U (effect: rank-biserial r, + means higher in the positive class),
continuous attributes by Spearman, stage by a Spearman trend (or Kruskal–Wallis). Features are
ranked once per group and attribute-missingness pattern and every statistic derives from those
ranks (:mod:`virtime.stats.rank_tests`), which keeps a 15,000-patient run in minutes. p-values are
corrected per family — one level × group — with NaN p-values (constant features) left out of the
family and flagged rather than poisoning it.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, replace
from typing import Literal

import numpy as np
import pandas as pd

from virtime._progress import progress
from virtime.errors import InvalidArgumentError
from virtime.stats.multiple_testing import adjust_by_family
from virtime.stats.rank_tests import (
    EXACT_MAX_N,
    kruskal_from_ranks,
    mannwhitney_from_ranks,
    rank_columns,
    spearman_from_ranks,
)
from virtime.stats.validation import Cohort

__all__ = ["LEVELS", "LEVEL_COLUMNS", "AssociationConfig", "AssociationResult", "associate"]

log = logging.getLogger(__name__)

LEVELS = ("pan-cancer", "cancer_type", "subtype")
LEVEL_COLUMNS = {"pan-cancer": None, "cancer_type": "cancer_type", "subtype": "subtype"}
PAN_GROUP = "all"
SUMMARY_COLUMNS = ["level", "group", "feature", "attribute", "kind", "test", "n", "n_positive",
                   "effect", "direction", "p", "q", "note"]


@dataclass(frozen=True)
class AssociationConfig:
    """Settings of :func:`associate`.

    ``min_patients``: smallest group (patients with the attribute known) tested;
    ``min_per_class``: smallest class of a binary attribute within a group; ``correction``: bh,
    holm or bonferroni, applied per level × group; ``stage_test``: spearman (trend) or kruskal;
    ``exact_max_n``: exact Mann–Whitney p when n1 + n2 ≤ this and the feature has no ties.
    """

    levels: tuple[str, ...] = LEVELS
    min_patients: int = 20
    min_per_class: int = 5
    correction: str = "bh"
    stage_test: Literal["spearman", "kruskal"] = "spearman"
    alpha: float = 0.05
    exact_max_n: int = EXACT_MAX_N
    attributes: tuple[str, ...] | None = None
    features: tuple[str, ...] | None = None
    show_progress: bool = False

    def __post_init__(self) -> None:
        bad = [lv for lv in self.levels if lv not in LEVELS]
        if bad:
            raise InvalidArgumentError(f"unknown level(s) {bad}; use {', '.join(LEVELS)}")
        if self.stage_test not in ("spearman", "kruskal"):
            raise InvalidArgumentError(f"stage_test must be spearman or kruskal, not {self.stage_test!r}")
        if self.min_patients < 3 or self.min_per_class < 1:
            raise InvalidArgumentError("min_patients must be ≥ 3 and min_per_class ≥ 1")
        if not 0 < self.alpha < 1:
            raise InvalidArgumentError(f"alpha must be in (0, 1), not {self.alpha}")


@dataclass
class AssociationResult:
    """Tidy association table plus the groups/attributes that were skipped and why.

    ``summary`` columns: level, group, feature, attribute, kind, test, n, n_positive, effect,
    direction (higher/lower/none), p, q, note. ``excluded`` counts tests whose p was NaN.
    """

    summary: pd.DataFrame
    skipped: pd.DataFrame
    config: AssociationConfig
    attributes: dict[str, str] = field(default_factory=dict)

    def significant(self, alpha: float | None = None) -> pd.DataFrame:
        """Rows with q < alpha (config.alpha by default), smallest q first."""
        a = self.config.alpha if alpha is None else alpha
        return self.summary[self.summary["q"] < a].sort_values("q", kind="mergesort")

    @property
    def excluded(self) -> int:
        """Number of tests left out of their family because p was NaN."""
        return int(self.summary["p"].isna().sum())

    def counts(self, alpha: float | None = None) -> pd.DataFrame:
        """Tests and significant associations per level."""
        a = self.config.alpha if alpha is None else alpha
        s = self.summary
        return pd.DataFrame({
            "tests": s.groupby("level", observed=True).size(),
            "significant": (s["q"] < a).groupby(s["level"], observed=True).sum(),
        })


def _groups(data: pd.DataFrame, level: str) -> list[tuple[str, np.ndarray]]:
    col = LEVEL_COLUMNS[level]
    if col is None:
        return [(PAN_GROUP, np.arange(len(data)))]
    codes, names = pd.factorize(data[col], sort=True)
    order = np.argsort(codes, kind="mergesort")
    bounds = np.searchsorted(codes[order], np.arange(len(names) + 1))
    return [(str(names[k]), order[bounds[k]:bounds[k + 1]]) for k in range(len(names))]


class _Collector:
    """Accumulates per-block arrays and builds one DataFrame at the end (cheap at 10^6 rows)."""

    def __init__(self, features: list[str]) -> None:
        self.features = features
        self.blocks: list[dict] = []
        self.skipped: list[tuple[str, str, str, int, str]] = []

    def add(self, level: str, group: str, attribute: str, kind: str, test: str, n: int,
            n_pos: float, effect: np.ndarray, p: np.ndarray) -> None:
        self.blocks.append(dict(level=level, group=group, attribute=attribute, kind=kind,
                                test=test, n=n, n_positive=n_pos, effect=effect, p=p))

    def skip(self, level: str, group: str, attribute: str, n: int, reason: str) -> None:
        self.skipped.append((level, group, attribute, n, reason))

    def frame(self) -> pd.DataFrame:
        m = len(self.features)
        if not self.blocks:
            return pd.DataFrame(columns=SUMMARY_COLUMNS)
        nb = len(self.blocks)

        def cat(key: str) -> pd.Categorical:
            labels = [b[key] for b in self.blocks]
            cats, codes = np.unique(labels, return_inverse=True)
            return pd.Categorical.from_codes(np.repeat(codes, m), categories=cats)

        effect = np.concatenate([b["effect"] for b in self.blocks])
        p = np.concatenate([b["p"] for b in self.blocks])
        direction = np.where(effect > 0, "higher", np.where(effect < 0, "lower", "none"))
        note = np.where(np.isnan(p), "p undefined (constant feature); excluded from family", "")
        df = pd.DataFrame({
            "level": cat("level"),
            "group": cat("group"),
            "feature": pd.Categorical.from_codes(np.tile(np.arange(m), nb), categories=self.features),
            "attribute": cat("attribute"),
            "kind": cat("kind"),
            "test": cat("test"),
            "n": np.repeat([b["n"] for b in self.blocks], m).astype(np.int64),
            "n_positive": np.repeat([b["n_positive"] for b in self.blocks], m),
            "effect": effect,
            "direction": pd.Categorical(direction, categories=["higher", "lower", "none"]),
            "p": p,
        })
        df["note"] = pd.Categorical(note)
        return df


def _test_group(col: _Collector, cfg: AssociationConfig, level: str, group: str, x: np.ndarray,
                attrs: dict[str, str], yvals: dict[str, np.ndarray]) -> None:
    cache: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}
    for attr, kind in attrs.items():
        y = yvals[attr]
        ok = ~np.isnan(y)
        n = int(ok.sum())
        if n < cfg.min_patients:
            col.skip(level, group, attr, n, f"fewer than {cfg.min_patients} patients")
            continue
        yk = y[ok]
        if kind == "binary":
            n1 = int((yk == 1).sum())
            if min(n1, n - n1) < cfg.min_per_class:
                col.skip(level, group, attr, n, f"fewer than {cfg.min_per_class} in a class")
                continue
        elif np.unique(yk).size < 2:
            col.skip(level, group, attr, n, "attribute constant in group")
            continue
        key = b"all" if ok.all() else np.packbits(ok).tobytes()
        if key not in cache:
            cache[key] = rank_columns(x if key == b"all" else x[ok])
        ranks, tie = cache[key]
        if kind == "binary":
            _, p, eff = mannwhitney_from_ranks(ranks, tie, yk == 1, exact_max_n=cfg.exact_max_n)
            col.add(level, group, attr, kind, "mann-whitney", n, float((yk == 1).sum()), eff, p)
        elif kind == "stage" and cfg.stage_test == "kruskal":
            h, p = kruskal_from_ranks(ranks, tie, yk)
            # effect: ε² = H / (n − 1); direction from the Spearman trend's sign
            rho, _ = spearman_from_ranks(ranks, rank_columns(yk)[0][:, 0])
            eff = np.sign(rho) * h / (n - 1)
            col.add(level, group, attr, kind, "kruskal-wallis", n, np.nan, eff, p)
        else:
            rho, p = spearman_from_ranks(ranks, rank_columns(yk)[0][:, 0])
            test = "spearman-trend" if kind == "stage" else "spearman"
            col.add(level, group, attr, kind, test, n, np.nan, rho, p)


def associate(cohort: Cohort, config: AssociationConfig | None = None, **overrides: object
              ) -> AssociationResult:
    """Tests every feature against every clinical attribute at each level and group.

    Parameters
    ----------
    cohort
        From :func:`virtime.stats.join_features`.
    config, overrides
        :class:`AssociationConfig`; keyword overrides replace single fields.

    Returns
    -------
    AssociationResult
        ``summary``: one row per level × group × feature × attribute, with q corrected per
        level × group family.
    """
    cfg = replace(config or AssociationConfig(), **overrides)  # type: ignore[arg-type]
    features = list(cfg.features) if cfg.features else list(cohort.features)
    missing = [f for f in features if f not in cohort.data.columns]
    if missing:
        raise InvalidArgumentError(f"unknown feature(s) {missing[:5]}")
    attrs = {a: k for a, k in cohort.attributes.items()
             if cfg.attributes is None or a in cfg.attributes}
    if cfg.attributes:
        unknown = [a for a in cfg.attributes if a not in cohort.attributes]
        if unknown:
            raise InvalidArgumentError(f"unknown attribute(s) {unknown}; have {list(cohort.attributes)}")
    data = cohort.data
    x_all = data[features].to_numpy(dtype=np.float64)
    y_all = {a: data[a].to_numpy(dtype=np.float64) for a in attrs}
    col = _Collector(features)
    jobs = [(lv, g, idx) for lv in cfg.levels for g, idx in _groups(data, lv)]
    with progress(jobs, desc="associations", unit="group", enabled=cfg.show_progress) as bar:
        for level, group, idx in bar:
            if len(idx) < cfg.min_patients:
                col.skip(level, group, "*", len(idx), f"fewer than {cfg.min_patients} patients")
                continue
            _test_group(col, cfg, level, group, x_all[idx],
                        attrs, {a: v[idx] for a, v in y_all.items()})
    summary = col.frame()
    if len(summary):
        # category codes are int8/int16: widen before combining (overflow with > 127 groups)
        n_groups = len(summary["group"].cat.categories) + 1
        family = summary["level"].cat.codes.to_numpy().astype(np.int64) * n_groups \
            + summary["group"].cat.codes.to_numpy().astype(np.int64)
        summary["q"] = adjust_by_family(summary["p"].to_numpy(), family, cfg.correction)
        summary = summary[SUMMARY_COLUMNS]
    skipped = pd.DataFrame(col.skipped, columns=["level", "group", "attribute", "n", "reason"])
    log.info("associations: %d tests, %d significant at q<%g, %d excluded (NaN p)",
             len(summary), int((summary["q"] < cfg.alpha).sum()) if len(summary) else 0,
             cfg.alpha, int(summary["p"].isna().sum()) if len(summary) else 0)
    return AssociationResult(summary, skipped, cfg, attrs)


def config_dict(cfg: AssociationConfig) -> dict:
    """The config as a plain dict (for reports and JSON sidecars)."""
    return asdict(cfg)
