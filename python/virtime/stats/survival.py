"""Survival analysis per channel and for the combined signature, pan-cancer and per cancer type.

For each group with enough patients and events: every channel's density is split at its median
(or tertiles) and compared by log-rank, and fitted alone in a Cox model (hazard ratio per SD).
The 21-channel signature is scored out of fold (:mod:`virtime.stats.signature`) and tested the
same way, so the bar plot of −log10 log-rank p compares like with like. Failed fits are rows in
``failures``, not exceptions.

Each channel's Cox model is also fitted adjusted (``adjust``, as :func:`~virtime.stats.associate`):
stratified by the categorical covariates (cancer type pan-cancer, site wherever there is one: a
baseline hazard per stratum) with the numeric ones as covariates, which adds the ``*_adj``
columns; ``adjust="none"`` gives the unadjusted table exactly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
import pandas as pd

from virtime._progress import progress
from virtime.channels import PROTEIN_CHANNELS
from virtime.errors import InputDataError, InvalidArgumentError
from virtime.stats.associations import level_groups
from virtime.stats.covariates import AUTO, NONE, Design, design_for_group, parse_adjust, \
    resolve_covariates
from virtime.stats.cox import cox_fit
from virtime.stats.logrank import logrank, split_groups
from virtime.stats.multiple_testing import adjust_by_family
from virtime.stats.signature import signature_risk
from virtime.stats.validation import Cohort

__all__ = [
    "SIGNATURE",
    "SurvivalConfig",
    "SurvivalResult",
    "default_survival_features",
    "survival_analysis",
]

log = logging.getLogger(__name__)

SIGNATURE = "signature"
_COLUMNS = ["level", "group", "feature", "kind", "n", "events", "split", "logrank_chi2",
            "logrank_p", "logrank_q", "permutation_p", "cox_hr", "cox_coef", "cox_se", "cox_p", "cox_q", "status"]
ADJUSTED_COLUMNS = ["n_adj", "events_adj", "cox_hr_adj", "cox_coef_adj", "cox_se_adj", "cox_p_adj",
                    "cox_q_adj", "covariates", "status_adj"]


@dataclass(frozen=True)
class SurvivalConfig:
    """Settings of :func:`survival_analysis`.

    ``split``: median or tertiles; ``features``: default every ``<protein>.density`` present;
    ``min_patients``/``min_events``: smallest group analysed; ``cox_penalizer``: ridge of the
    per-channel Cox fits; ``signature_penalizer``/``folds``/``seed``: the out-of-fold signature;
    ``signature_permutations``: B of its permutation p (0: χ² p only); ``adjust``: "auto",
    "none" or covariate columns, as :class:`~virtime.stats.AssociationConfig`'s.
    """

    levels: tuple[str, ...] = ("pan-cancer", "cancer_type")
    split: Literal["median", "tertiles"] = "median"
    features: tuple[str, ...] | None = None
    min_patients: int = 30
    min_events: int = 10
    cox_penalizer: float = 0.0
    signature: bool = True
    signature_penalizer: float = 0.1
    folds: int = 5
    signature_permutations: int = 0
    seed: int = 0
    correction: str = "bh"
    show_progress: bool = False
    adjust: str | tuple[str, ...] = AUTO

    def __post_init__(self) -> None:
        object.__setattr__(self, "adjust", parse_adjust(self.adjust))
        if self.split not in ("median", "tertiles"):
            raise InvalidArgumentError(f"split must be median or tertiles, not {self.split!r}")
        if self.min_patients < 4 or self.min_events < 1:
            raise InvalidArgumentError("min_patients must be ≥ 4 and min_events ≥ 1")


@dataclass
class SurvivalResult:
    """Per-channel and signature survival statistics.

    ``summary``: one row per level × group × feature (``kind`` channel or signature) with
    log-rank χ²/p/q (q per level × group over channels) and Cox HR per SD/p/q; ``failures``: fits
    that failed and why; ``signature_scores``: out-of-fold risk and high/low call per patient;
    ``controls``: the same rows for the background channels' densities (TRITC, Cy5: negative
    controls, outside the q families); ``control_comparison``: per level × group the strongest
    background |Cox log HR per SD| (adjusted when the run is) and how many channels beat it.
    Adjusted runs flag ``control_like`` channels: q < 0.05 but no stronger than the background.
    """

    summary: pd.DataFrame
    failures: pd.DataFrame
    signature_scores: pd.DataFrame
    skipped: pd.DataFrame
    config: SurvivalConfig
    controls: pd.DataFrame = field(default_factory=pd.DataFrame)
    control_comparison: pd.DataFrame = field(default_factory=pd.DataFrame)

    def skip_reason(self) -> str:
        """One sentence: which groups were skipped, by which rule, and which setting to change;
        "" when none was."""
        from virtime.stats.skips import survival_skip_reason

        return survival_skip_reason(self.skipped, len(self.summary), self.config.min_patients,
                                    self.config.min_events)


def default_survival_features(cohort: Cohort) -> list[str]:
    """``<channel>.density`` for every protein channel present (else every ``*.density``)."""
    feats = [f"{c}.density" for c in PROTEIN_CHANNELS if f"{c}.density" in cohort.features]
    if not feats:
        feats = [f for f in cohort.features if f.endswith(".density") and not any(
            op in f for op in "|&")]
    if not feats:
        raise InputDataError("no '<channel>.density' features for survival analysis")
    return feats


def _adjusted_cox(x: np.ndarray, t: np.ndarray, e: np.ndarray, design: Design,
                  cfg: SurvivalConfig) -> dict:
    """The ``*_adj`` fields of one channel: Cox of the channel (per SD) stratified by the
    categorical covariates, with the continuous ones as further columns."""
    use = design.usable & np.isfinite(x)
    out = dict(n_adj=int(use.sum()), events_adj=int(e[use].sum()),
               covariates=", ".join(design.entered), status_adj="ok")
    if design.note:
        out["status_adj"] = design.note
        return out
    if out["n_adj"] < cfg.min_patients or out["events_adj"] < cfg.min_events:
        out["status_adj"] = (f"{out['n_adj']} patients ({out['events_adj']} events) with every "
                             f"covariate known; needs ≥ {cfg.min_patients} and ≥ {cfg.min_events}")
        return out
    xu = x[use]
    sd = xu.std(ddof=1)
    cols = [xu / sd if sd > 0 else xu]
    if design.continuous is not None:
        cols.append(design.continuous[use])
    strata = None if design.strata is None else design.strata[use]
    fit = cox_fit(t[use], e[use], np.column_stack(cols), penalizer=cfg.cox_penalizer,
                  strata=strata)
    if fit.ok:
        out.update(cox_coef_adj=fit.coef[0], cox_se_adj=fit.se[0], cox_p_adj=fit.p[0],
                   cox_hr_adj=float(np.exp(fit.coef[0])))
    else:
        out["status_adj"] = f"cox failed: {fit.message}"
    return out


def _group_rows(level, group, d, feats, cfg, failures, scores, design=None):
    t_all, e_all = d["os_time"].to_numpy(float), d["os_event"].to_numpy(float)
    rows = []
    x_all = d[feats].to_numpy(float)
    for j, f in enumerate(feats):
        defined = np.isfinite(x_all[:, j])  # NaN: undefined on that patient, dropped per test
        x, t, e = x_all[defined, j], t_all[defined], e_all[defined]
        n, ev = len(t), int(e.sum())
        row = dict(level=level, group=group, feature=f, kind="channel", n=n, events=ev,
                   split=cfg.split, status="ok")
        if n < cfg.min_patients or ev < cfg.min_events:
            row["status"] = (f"feature defined on {n} patients ({ev} events); needs "
                             f"≥ {cfg.min_patients} and ≥ {cfg.min_events}")
            rows.append(row)
            continue
        labels = split_groups(x, cfg.split)
        if len(np.unique(labels)) < 2:
            row["status"] = "split failed: feature has too few distinct values"
            failures.append((level, group, f, "log-rank", row["status"]))
        else:
            lr = logrank(t, e, labels)
            row.update(logrank_chi2=lr.chi2, logrank_p=lr.p)
        sd = x.std(ddof=1)
        fit = cox_fit(t, e, x / sd if sd > 0 else x, penalizer=cfg.cox_penalizer)
        if fit.ok:
            row.update(cox_coef=fit.coef[0], cox_se=fit.se[0], cox_p=fit.p[0],
                       cox_hr=float(np.exp(fit.coef[0])))
        else:
            row["status"] = f"cox failed: {fit.message}"
            failures.append((level, group, f, "cox", fit.message))
        if design is not None:
            if design.active:
                row.update(_adjusted_cox(x_all[:, j], t_all, e_all, design, cfg))
            else:  # nothing to adjust for in this group: the unadjusted fit
                row.update(n_adj=n, events_adj=ev, covariates="", status_adj=row["status"],
                           **{f"{k}_adj": row.get(k, np.nan)
                              for k in ("cox_hr", "cox_coef", "cox_se", "cox_p")})
        rows.append(row)
    if cfg.signature:
        # complete cases: the signature needs every channel of a patient
        cc = np.isfinite(x_all).all(axis=1)
        t, e = t_all[cc], e_all[cc]
        risk, high = np.full(len(d), np.nan), np.zeros(len(d), dtype=bool)
        row = dict(level=level, group=group, feature=SIGNATURE, kind="signature",
                   n=int(cc.sum()), events=int(e.sum()), split="median")
        if cc.sum() < cfg.min_patients or e.sum() < cfg.min_events:
            row["status"] = (f"{int(cc.sum())} patients with every channel defined "
                             f"({int(e.sum())} events); too few for the signature")
            failures.append((level, group, SIGNATURE, "signature", row["status"]))
        else:
            sig = signature_risk(t, e, x_all[cc], folds=cfg.folds,
                                 penalizer=cfg.signature_penalizer, seed=cfg.seed,
                                 n_permutations=cfg.signature_permutations)
            row.update(n=int(sig.scored.sum()), events=int(e[sig.scored].sum()),
                       status="ok" if not sig.failed_folds else "; ".join(sig.failed_folds))
            for msg in sig.failed_folds:
                failures.append((level, group, SIGNATURE, "signature", msg))
            if sig.logrank is not None:
                row.update(logrank_chi2=sig.logrank.chi2, logrank_p=sig.logrank.p,
                           permutation_p=sig.permutation_p)
            risk[cc], high[cc] = sig.risk, sig.high
        rows.append(row)
        scores.append(pd.DataFrame({"patient_id": d["patient_id"].to_numpy(), "level": level,
                                    "group": group, "risk": risk, "high": high,
                                    "os_time": t_all, "os_event": e_all}))
    return rows


def survival_analysis(cohort: Cohort, config: SurvivalConfig | None = None, **overrides: object
                      ) -> SurvivalResult:
    """Log-rank and Cox per channel, and the out-of-fold signature, for each level and group.

    Patients without survival (NaN ``os_time``) are left out; groups with fewer than
    ``min_patients`` patients or ``min_events`` events are listed in ``skipped``. A feature
    undefined (NaN) on some patients is tested on the others (``n``/``events`` per row); the
    signature uses the patients with every channel defined.
    """
    cfg = replace(config or SurvivalConfig(), **overrides)  # type: ignore[arg-type]
    if not cohort.has_survival:
        raise InputDataError("clinical table has no os_time/os_event columns")
    feats = list(cfg.features) if cfg.features else default_survival_features(cohort)
    unknown = [f for f in feats if f not in cohort.data.columns]
    if unknown:
        raise InvalidArgumentError(f"unknown feature(s) {unknown[:5]}")
    data = cohort.data[cohort.data["os_time"].notna()].reset_index(drop=True)
    dropped = len(cohort.data) - len(data)
    if dropped:
        log.info("survival: %d patient(s) without survival data left out", dropped)
    rows: list[dict] = []
    failures: list[tuple] = []
    scores: list[pd.DataFrame] = []
    skipped: list[tuple] = []
    adjusting = cfg.adjust != NONE
    covariates = {lv: resolve_covariates(cohort, cfg.adjust, lv) for lv in cfg.levels}
    controls = [c for c in cohort.controls if c.endswith(".density") and c not in feats]
    no_signature = replace(cfg, signature=False)
    control_rows: list[dict] = []
    jobs = [(lv, g, idx) for lv in cfg.levels for g, idx in level_groups(data, lv)]
    with progress(jobs, desc="survival", unit="group", enabled=cfg.show_progress) as bar:
        for level, group, idx in bar:
            d = data.iloc[idx]
            ev = int(d["os_event"].sum())
            if len(d) < cfg.min_patients or ev < cfg.min_events:
                skipped.append((level, group, len(d), ev,
                                f"needs ≥ {cfg.min_patients} patients and ≥ {cfg.min_events} events"))
                continue
            design = design_for_group(d, covariates[level]) if adjusting else None
            rows.extend(_group_rows(level, group, d, feats, cfg, failures, scores, design))
            if controls:
                control_rows.extend(_group_rows(level, group, d, controls, no_signature, [],
                                                [], design))
    summary = pd.DataFrame(rows).reindex(
        columns=_COLUMNS + (ADJUSTED_COLUMNS if adjusting else []))
    if len(summary):
        fam = (summary["level"] + "/" + summary["group"]).to_numpy()
        chan = (summary["kind"] == "channel").to_numpy()
        for col in ("logrank", "cox") + (("cox_adj",) if adjusting else ()):
            q = np.full(len(summary), np.nan)
            p_col, q_col = ("cox_p_adj", "cox_q_adj") if col == "cox_adj" else (f"{col}_p",
                                                                                 f"{col}_q")
            q[chan] = adjust_by_family(summary.loc[chan, p_col].to_numpy(float), fam[chan],
                                       cfg.correction)
            summary[q_col] = q
    control_table = pd.DataFrame(control_rows).reindex(columns=summary.columns)
    comparison = _control_comparison(summary, control_table, adjusting)
    if adjusting:
        summary["control_like"] = _survival_control_like(summary, comparison)
    return SurvivalResult(
        summary,
        pd.DataFrame(failures, columns=["level", "group", "feature", "step", "message"]),
        pd.concat(scores, ignore_index=True) if scores else pd.DataFrame(
            columns=["patient_id", "level", "group", "risk", "high", "os_time", "os_event"]),
        pd.DataFrame(skipped, columns=["level", "group", "n", "events", "reason"]),
        cfg,
        control_table,
        comparison,
    )


def _control_comparison(summary: pd.DataFrame, controls: pd.DataFrame, adjusted: bool
                        ) -> pd.DataFrame:
    """Per level × group: the strongest background |log HR per SD| and the channels beating it."""
    cols = ["level", "group", "control_feature", "control_effect", "n_protein", "n_beating"]
    coef = "cox_coef_adj" if adjusted else "cox_coef"
    if controls.empty or summary.empty:
        return pd.DataFrame(columns=cols)
    out = []
    ctrl = controls.dropna(subset=[coef])
    chan = summary[summary["kind"] == "channel"].dropna(subset=[coef])
    for (level, group), c in ctrl.groupby(["level", "group"], sort=False):
        strongest = c.loc[c[coef].abs().idxmax()]
        bound = abs(float(strongest[coef]))
        mine = chan[(chan["level"] == level) & (chan["group"] == group)]
        out.append((level, group, strongest["feature"], bound, len(mine),
                    int((mine[coef].abs() > bound).sum())))
    return pd.DataFrame(out, columns=cols)


def _survival_control_like(summary: pd.DataFrame, comparison: pd.DataFrame,
                           alpha: float = 0.05) -> pd.Series:
    """Channels with adjusted Cox q < alpha whose |log HR| is no larger than the background's;
    NA where no control was fitted (and for the signature)."""
    if comparison.empty:
        return pd.Series(pd.array([pd.NA] * len(summary), dtype="boolean"), index=summary.index)
    bound = summary.join(comparison.set_index(["level", "group"])["control_effect"],
                         on=["level", "group"])["control_effect"].to_numpy(dtype=float)
    flag = pd.array((summary["cox_q_adj"].to_numpy(dtype=float) < alpha)
                    & (summary["cox_coef_adj"].abs().to_numpy(dtype=float) <= bound),
                    dtype="boolean")
    flag[np.isnan(bound) | (summary["kind"] != "channel").to_numpy()] = pd.NA
    return pd.Series(flag, index=summary.index)

