"""Feature × clinical-attribute associations at pan-cancer, cancer-type and subtype level.

For every group that is large enough, each feature is tested against each attribute: binary
biomarkers by Mann–Whitney U (effect: rank-biserial r, + means higher in the positive class),
continuous attributes by Spearman, stage by a Spearman trend (or Kruskal–Wallis). Features are
ranked once per group and attribute-missingness pattern and every statistic derives from those
ranks (:mod:`virtime.stats.rank_tests`), which keeps a 15,000-patient run in minutes. p-values are
corrected per family — one level × group — with NaN p-values (constant features) left out of the
family and flagged rather than poisoning it.

Each test is also run adjusted for confounders (``adjust``, :mod:`virtime.stats.covariates`:
cancer type at pan-cancer level, subtype at cancer-type level, the site wherever there is one),
which adds ``n_adj, effect_adj, p_adj, q_adj, test_adj, covariates, note_adj``; ``adjust="none"``
gives the paper's univariate table exactly.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, replace
from typing import Literal

import numpy as np
import pandas as pd

from virtime._progress import progress
from virtime.errors import InvalidArgumentError
from virtime.stats.adjusted import adjusted_block
from virtime.stats.controls import control_comparison, control_like
from virtime.stats.covariates import (
    AUTO,
    NONE,
    Design,
    design_for_group,
    parse_adjust,
    resolve_covariates,
)
from virtime.stats.multiple_testing import adjust_by_family
from virtime.stats.rank_tests import (
    EXACT_MAX_N,
    kruskal_from_ranks,
    mannwhitney_from_ranks,
    rank_columns,
    spearman_from_ranks,
)
from virtime.stats.stratified import StratifiedRanks
from virtime.stats.validation import Cohort

__all__ = ["LEVELS", "LEVEL_COLUMNS", "AssociationConfig", "AssociationResult", "associate"]

log = logging.getLogger(__name__)

LEVELS = ("pan-cancer", "cancer_type", "subtype")
LEVEL_COLUMNS = {"pan-cancer": None, "cancer_type": "cancer_type", "subtype": "subtype"}
PAN_GROUP = "all"
SUMMARY_COLUMNS = ["level", "group", "feature", "attribute", "kind", "test", "n", "n_positive",
                   "effect", "direction", "p", "q", "note"]
ADJUSTED_COLUMNS = ["n_adj", "effect_adj", "p_adj", "q_adj", "test_adj", "covariates", "note_adj"]


@dataclass(frozen=True)
class AssociationConfig:
    """Settings of :func:`associate`.

    ``min_patients``: smallest group (patients with the attribute known) tested;
    ``min_per_class``: smallest class of a binary attribute within a group; ``correction``: bh,
    holm or bonferroni, applied per level × group; ``stage_test``: spearman (trend) or kruskal;
    ``exact_max_n``: exact Mann–Whitney p when n1 + n2 ≤ this and the feature has no ties;
    ``adjust``: "auto" (the defaults of :mod:`virtime.stats.covariates`), "none" (the paper's
    univariate table, unchanged) or the covariate columns to adjust for at every level.
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
    adjust: str | tuple[str, ...] = AUTO

    def __post_init__(self) -> None:
        object.__setattr__(self, "adjust", parse_adjust(self.adjust))
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
    direction (higher/lower/none), p, q, note (adjusted runs add the adjusted columns and
    ``control_like``). ``excluded`` counts tests whose p was NaN. ``control_tests``: the same
    tests of the background channels (TRITC, Cy5), outside the FDR families; ``controls``: per
    level × group × attribute × metric, the strongest background |effect| and how many protein
    features beat it (:mod:`virtime.stats.controls`).
    """

    summary: pd.DataFrame
    skipped: pd.DataFrame
    config: AssociationConfig
    attributes: dict[str, str] = field(default_factory=dict)
    controls: pd.DataFrame = field(default_factory=pd.DataFrame)
    control_tests: pd.DataFrame = field(default_factory=pd.DataFrame)

    def control_like(self) -> pd.Series:
        """The ``control_like`` flag of every summary row (adjusted q and effect when the run
        was adjusted): a discovery no stronger than the background channels' strongest."""
        adj = "p_adj" in self.summary.columns
        return control_like(self.summary, self.controls, q="q_adj" if adj else "q",
                            effect="effect_adj" if adj else "effect", alpha=self.config.alpha)

    def significant(self, alpha: float | None = None) -> pd.DataFrame:
        """Rows with q < alpha (config.alpha by default), smallest q first."""
        a = self.config.alpha if alpha is None else alpha
        return self.summary[self.summary["q"] < a].sort_values("q", kind="mergesort")

    def controls_by_level(self) -> pd.DataFrame:
        """Per level and attribute: groups with background controls, protein tests compared,
        and how many beat the strongest background channel (summed over groups and metrics)."""
        c = self.controls
        if c.empty:
            return pd.DataFrame(columns=["level", "attribute", "groups", "n_protein",
                                         "n_beating"])
        g = c.groupby(["level", "attribute"], sort=False)
        return pd.DataFrame({"groups": g["group"].nunique(), "n_protein": g["n_protein"].sum(),
                             "n_beating": g["n_beating"].sum()}).reset_index()

    def skip_reason(self) -> str:
        """One sentence: which rule skipped groups or attributes (or emptied the table) and
        which setting to change; "" when nothing was skipped."""
        from virtime.stats.skips import association_skip_reason

        return association_skip_reason(self.skipped, len(self.summary), self.config.min_patients,
                                       self.config.min_per_class, len(self.attributes))

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


def level_groups(data: pd.DataFrame, level: str) -> list[tuple[str, np.ndarray]]:
    """The patients (row positions) of each group at ``level`` (one group for pan-cancer), in
    sorted group order; shared by the association and survival scans so both test the same
    families."""
    col = LEVEL_COLUMNS[level]
    if col is None:
        return [(PAN_GROUP, np.arange(len(data)))]
    codes, names = pd.factorize(data[col], sort=True)
    order = np.argsort(codes, kind="mergesort")
    bounds = np.searchsorted(codes[order], np.arange(len(names) + 1))
    return [(str(names[k]), order[bounds[k]:bounds[k + 1]]) for k in range(len(names))]


_NOTE_CONSTANT = "p undefined (constant feature); excluded from family"
_NOTE_UNDEFINED = "feature undefined (NaN) on too many patients of the group; excluded from family"


class _Collector:
    """Accumulates per-block arrays and builds one DataFrame at the end (cheap at 10^6 rows)."""

    def __init__(self, features: list[str]) -> None:
        self.features = features
        self.blocks: list[dict] = []
        self.skipped: list[tuple[str, str, str, int, str]] = []

    def add(self, level: str, group: str, attribute: str, kind: str, test: str, n: np.ndarray,
            n_pos: np.ndarray, effect: np.ndarray, p: np.ndarray, undefined: np.ndarray,
            adjusted: dict | None = None) -> None:
        self.blocks.append(dict(level=level, group=group, attribute=attribute, kind=kind,
                                test=test, n=n, n_positive=n_pos, effect=effect, p=p,
                                undefined=undefined, **(adjusted or {})))

    def skip(self, level: str, group: str, attribute: str, n: int, reason: str) -> None:
        self.skipped.append((level, group, attribute, n, reason))

    def frame(self, adjusted: bool = False) -> pd.DataFrame:
        m = len(self.features)
        if not self.blocks:
            return pd.DataFrame(columns=SUMMARY_COLUMNS + (ADJUSTED_COLUMNS if adjusted else []))
        nb = len(self.blocks)

        def cat(key: str) -> pd.Categorical:
            labels = [b[key] for b in self.blocks]
            cats, codes = np.unique(labels, return_inverse=True)
            return pd.Categorical.from_codes(np.repeat(codes, m), categories=cats)

        def joined(key: str) -> np.ndarray:
            return np.concatenate([b[key] for b in self.blocks])

        effect, p = joined("effect"), joined("p")
        direction = np.where(effect > 0, "higher", np.where(effect < 0, "lower", "none"))
        note = np.where(joined("undefined"), _NOTE_UNDEFINED,
                        np.where(np.isnan(p), _NOTE_CONSTANT, ""))
        df = pd.DataFrame({
            "level": cat("level"),
            "group": cat("group"),
            "feature": pd.Categorical.from_codes(np.tile(np.arange(m), nb), categories=self.features),
            "attribute": cat("attribute"),
            "kind": cat("kind"),
            "test": cat("test"),
            "n": joined("n").astype(np.int64),
            "n_positive": joined("n_positive").astype(np.float64),
            "effect": effect,
            "direction": pd.Categorical(direction, categories=["higher", "lower", "none"]),
            "p": p,
        })
        df["note"] = pd.Categorical(note)
        if adjusted:
            df["n_adj"] = joined("n_adj").astype(np.int64)
            df["effect_adj"] = joined("effect_adj")
            df["p_adj"] = joined("p_adj")
            df["q_adj"] = np.nan
            df["test_adj"] = cat("test_adj")
            df["covariates"] = cat("covariates")
            df["note_adj"] = pd.Categorical(joined("note_adj").astype(str))
        return df


def _column_subsets(fnan: np.ndarray, ok: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """(feature indices, patient mask) blocks: features without NaN among ``ok`` patients share
    one block; the others are grouped by where they are NaN (NaN is dropped per test)."""
    bad = fnan[ok].any(axis=0)
    out = []
    clean = np.flatnonzero(~bad)
    if clean.size:
        out.append((clean, ok))
    by_pattern: dict[bytes, list[int]] = {}
    for j in np.flatnonzero(bad):
        by_pattern.setdefault(np.packbits(fnan[:, j] & ok).tobytes(), []).append(int(j))
    for cols in by_pattern.values():
        out.append((np.asarray(cols), ok & ~fnan[:, cols[0]]))
    return out


class _AdjustedArrays:
    """The adjusted columns of one attribute in one group, filled block by block."""

    def __init__(self, m: int, kind: str, test: str, design: Design) -> None:
        self.design = design
        self.n = np.zeros(m, dtype=np.int64)
        self.effect, self.p = np.full(m, np.nan), np.full(m, np.nan)
        self.note = np.full(m, "", dtype=object)
        self.test = test
        self.covariates = ", ".join(design.entered)
        if design.active:
            from virtime.stats.adjusted import REGRESSION_TEST, STRATIFIED_TEST

            self.test = (REGRESSION_TEST if design.matrix is not None else STRATIFIED_TEST)[kind]

    def fill(self, cols: np.ndarray, ok: np.ndarray, xs: np.ndarray, yk: np.ndarray, kind: str,
             raw: tuple[int, np.ndarray, np.ndarray], cfg: AssociationConfig,
             cache: dict, key: bytes) -> None:
        """Adjusted statistics of the feature columns ``cols`` (data ``xs``, patients ``ok``)."""
        sub = self.design.subset(ok)
        if not sub.active:  # nothing to adjust for here: the unadjusted test
            self.n[cols], self.effect[cols], self.p[cols] = raw
            return

        def ranked(use: np.ndarray, strata: np.ndarray) -> StratifiedRanks:
            k = key + b"|strata"
            if k not in cache:
                cache[k] = StratifiedRanks.of(xs[use], strata)
            return cache[k]

        blk = adjusted_block(xs, yk, kind, sub, min_patients=cfg.min_patients,
                             min_per_class=cfg.min_per_class, exact_max_n=cfg.exact_max_n,
                             ranked=ranked)
        self.n[cols], self.effect[cols], self.p[cols], self.note[cols] = (
            blk.n, blk.effect, blk.p, blk.note)

    def columns(self) -> dict:
        return dict(n_adj=self.n, effect_adj=self.effect, p_adj=self.p, note_adj=self.note,
                    test_adj=self.test, covariates=self.covariates)


def _test_group(col: _Collector, cfg: AssociationConfig, level: str, group: str, x: np.ndarray,
                attrs: dict[str, str], yvals: dict[str, np.ndarray],
                design: Design | None = None) -> None:
    cache: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}
    m = x.shape[1]
    fnan = np.isnan(x)
    any_nan = bool(fnan.any())
    for attr, kind in attrs.items():
        y = yvals[attr]
        ok_attr = ~np.isnan(y)
        n_attr = int(ok_attr.sum())
        if n_attr < cfg.min_patients:
            col.skip(level, group, attr, n_attr, f"fewer than {cfg.min_patients} patients")
            continue
        ya = y[ok_attr]
        if kind == "binary":
            n1 = int((ya == 1).sum())
            if min(n1, n_attr - n1) < cfg.min_per_class:
                col.skip(level, group, attr, n_attr, f"fewer than {cfg.min_per_class} in a class")
                continue
        elif np.unique(ya).size < 2:
            col.skip(level, group, attr, n_attr, "attribute constant in group")
            continue
        eff_all, p_all = np.full(m, np.nan), np.full(m, np.nan)
        n_all, npos_all = np.zeros(m, dtype=np.int64), np.full(m, np.nan)
        undefined = np.zeros(m, dtype=bool)
        test = {"binary": "mann-whitney", "stage": "spearman-trend"}.get(kind, "spearman")
        if kind == "stage" and cfg.stage_test == "kruskal":
            test = "kruskal-wallis"
        adj = _AdjustedArrays(m, kind, test, design) if design is not None else None
        blocks = _column_subsets(fnan, ok_attr) if any_nan else [(np.arange(m), ok_attr)]
        for cols, ok in blocks:
            n = int(ok.sum())
            yk = y[ok]
            n_all[cols] = n
            if kind == "binary":
                n1 = int((yk == 1).sum())
                npos_all[cols] = n1
                too_few = n < cfg.min_patients or min(n1, n - n1) < cfg.min_per_class
            else:
                too_few = n < cfg.min_patients or np.unique(yk).size < 2
            if too_few:
                undefined[cols] = True
                if adj is not None:
                    adj.n[cols], adj.note[cols] = n, _NOTE_UNDEFINED
                continue
            full = cols.size == m
            key = (b"all" if ok.all() else np.packbits(ok).tobytes()) + (
                b"" if full else cols.astype(np.int32).tobytes())
            xs = x if ok.all() else x[ok]
            xs = xs if full else xs[:, cols]
            if key not in cache:
                cache[key] = rank_columns(xs)
            ranks, tie = cache[key]
            if kind == "binary":
                _, p, eff = mannwhitney_from_ranks(ranks, tie, yk == 1,
                                                   exact_max_n=cfg.exact_max_n)
            elif kind == "stage" and cfg.stage_test == "kruskal":
                h, p = kruskal_from_ranks(ranks, tie, yk)
                # effect: ε² = H / (n − 1); direction from the Spearman trend's sign
                rho, _ = spearman_from_ranks(ranks, rank_columns(yk)[0][:, 0])
                eff = np.sign(rho) * h / (n - 1)
            else:
                eff, p = spearman_from_ranks(ranks, rank_columns(yk)[0][:, 0])
            eff_all[cols], p_all[cols] = eff, p
            if adj is not None:
                adj.fill(cols, ok, xs, yk, kind, (n, eff, p), cfg, cache, key)
        col.add(level, group, attr, kind, test, n_all, npos_all, eff_all, p_all, undefined,
                adj.columns() if adj is not None else None)


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
    adjusting = cfg.adjust != NONE
    covariates = {lv: resolve_covariates(cohort, cfg.adjust, lv) for lv in cfg.levels}
    data = cohort.data
    controls = [c for c in cohort.controls if c in data.columns and c not in features]
    x_all = data[features + controls].to_numpy(dtype=np.float64)
    y_all = {a: data[a].to_numpy(dtype=np.float64) for a in attrs}
    col = _Collector(features + controls)
    cov_data = data[sorted({c for covs in covariates.values() for c in covs})]
    jobs = [(lv, g, idx) for lv in cfg.levels for g, idx in level_groups(data, lv)]
    with progress(jobs, desc="associations", unit="group", enabled=cfg.show_progress) as bar:
        for level, group, idx in bar:
            if len(idx) < cfg.min_patients:
                col.skip(level, group, "*", len(idx), f"fewer than {cfg.min_patients} patients")
                continue
            design = design_for_group(cov_data.iloc[idx], covariates[level]) if adjusting \
                else None
            tested = {a: k for a, k in attrs.items() if a not in covariates[level]}
            _test_group(col, cfg, level, group, x_all[idx],
                        tested, {a: y_all[a][idx] for a in tested}, design)
    summary, control_tests = _split_controls(col.frame(adjusting), controls)
    summary = _corrected(summary, cfg, adjusting)
    control_tests = _corrected(control_tests, cfg, adjusting)
    effect = "effect_adj" if adjusting else "effect"
    comparison = control_comparison(summary, control_tests, effect)
    if adjusting:
        summary["control_like"] = control_like(summary, comparison, q="q_adj", effect=effect,
                                               alpha=cfg.alpha)
    skipped = pd.DataFrame(col.skipped, columns=["level", "group", "attribute", "n", "reason"])
    log.info("associations: %d tests, %d significant at q<%g, %d excluded (NaN p)",
             len(summary), int((summary["q"] < cfg.alpha).sum()) if len(summary) else 0,
             cfg.alpha, int(summary["p"].isna().sum()) if len(summary) else 0)
    return AssociationResult(summary, skipped, cfg, attrs, comparison, control_tests)


def _split_controls(frame: pd.DataFrame, controls: list[str]
                    ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(protein-feature rows, background-channel rows) of a collector frame."""
    if not controls or frame.empty:
        return frame, frame.iloc[0:0]
    is_control = frame["feature"].isin(controls).to_numpy()
    main, ctrl = frame[~is_control].reset_index(drop=True), frame[is_control].reset_index(drop=True)
    main["feature"] = main["feature"].cat.remove_categories(controls)
    return main, ctrl


def _corrected(summary: pd.DataFrame, cfg: AssociationConfig, adjusting: bool) -> pd.DataFrame:
    """q (and q_adj) per level × group family, columns in table order."""
    if len(summary):
        # category codes are int8/int16: widen before combining (overflow with > 127 groups)
        n_groups = len(summary["group"].cat.categories) + 1
        family = summary["level"].cat.codes.to_numpy().astype(np.int64) * n_groups \
            + summary["group"].cat.codes.to_numpy().astype(np.int64)
        summary["q"] = adjust_by_family(summary["p"].to_numpy(), family, cfg.correction)
        if adjusting:
            summary["q_adj"] = adjust_by_family(summary["p_adj"].to_numpy(), family,
                                                cfg.correction)
        summary = summary[SUMMARY_COLUMNS + (ADJUSTED_COLUMNS if adjusting else [])]
    return summary


def config_dict(cfg: AssociationConfig) -> dict:
    """The config as a plain dict (for reports and JSON sidecars)."""
    return asdict(cfg)
