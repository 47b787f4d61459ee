"""Channel audit: how much of each virtual channel is composition, another marker, or itself.

Independent validations found virtual channels that follow cellularity more than their own
marker, and channels that match another marker better than their own. Before a channel's
association is read as biology, the audit asks, per channel (slide-level ``<channel>.density``):

* **composition** — R² of an ordinary least-squares fit on the composition covariates
  (cellularity = ``DAPI.density``, tissue area = ``tissue.area_mm2``, and the background channels
  ``TRITC.density`` / ``Cy5.density`` where the table has them), and the partial correlation with
  each covariate given the others. ``R² ≥ COMPOSITION_R2`` flags the channel
  ``composition_driven``: most of what varies between slides is how much tissue and how many
  nuclei they have, not the marker.
* **redundancy** — the largest |Pearson r| with another channel and which one;
  ``≥ REDUNDANT_R`` flags ``redundant`` (the two channels carry one signal).
* **specificity** (with paired ground truth from ``virtime evaluate``) — predicted channel *i*
  against measured channel *j* (Pearson and Dice, :mod:`virtime.evaluation.specificity`);
  ``off_target`` when some other measured marker matches better than the channel's own.

The **trust tier** joins them: the model card's Pearson tier (high ≥ 0.5, medium ≥ 0.3, low)
when ground truth is given, else ``unknown``; ``off_target`` makes it ``low``; being
``composition_driven`` lowers it one step (``unknown`` becomes ``low``). The report colours
channel labels by these tiers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from virtime.channels import BACKGROUND_CHANNELS, PROTEIN_CHANNELS
from virtime.errors import InputDataError
from virtime.evaluation.specificity import SpecificityMatrix

__all__ = [
    "COMPOSITION_R2",
    "REDUNDANT_R",
    "ChannelAudit",
    "channel_audit",
    "composition_covariates",
    "group_covariates",
    "partial_correlation",
    "r_squared",
    "specificity_table",
]

log = logging.getLogger(__name__)

#: R² on the composition covariates at or above which a channel is ``composition_driven``.
COMPOSITION_R2 = 0.5
#: |r| with another channel at or above which a channel is ``redundant``.
REDUNDANT_R = 0.9
CELLULARITY = "DAPI.density"
TISSUE_AREA = "tissue.area_mm2"
_TIER_DOWN = {"high": "medium", "medium": "low", "low": "low", "unknown": "low"}


def composition_covariates(columns: list[str] | pd.Index) -> list[str]:
    """The composition covariates present among ``columns``: cellularity, tissue area and the
    background channels' densities."""
    wanted = [CELLULARITY, TISSUE_AREA, *(f"{c}.density" for c in BACKGROUND_CHANNELS)]
    return [c for c in wanted if c in set(columns)]


def r_squared(y: np.ndarray, x: np.ndarray) -> float:
    """R² of the least-squares fit of ``y`` on ``x`` (n × k) with an intercept; NaN if y is
    constant."""
    y = np.asarray(y, float)
    design = np.column_stack([np.ones(len(y)), np.asarray(x, float).reshape(len(y), -1)])
    beta, *_ = np.linalg.lstsq(design, y, rcond=None)
    tss = float(((y - y.mean()) ** 2).sum())
    if tss <= 0:
        return float("nan")
    return float(1.0 - ((y - design @ beta) ** 2).sum() / tss)


def _residual(v: np.ndarray, others: np.ndarray) -> np.ndarray:
    design = np.column_stack([np.ones(len(v)), others])
    beta, *_ = np.linalg.lstsq(design, v, rcond=None)
    return v - design @ beta


def partial_correlation(y: np.ndarray, x: np.ndarray, given: np.ndarray | None = None) -> float:
    """Correlation of ``y`` and ``x`` after both are regressed on ``given`` (n × k, may be None)."""
    y, x = np.asarray(y, float), np.asarray(x, float)
    g = np.empty((len(y), 0)) if given is None else np.asarray(given, float).reshape(len(y), -1)
    ry, rx = _residual(y, g), _residual(x, g)
    sy, sx = np.sqrt((ry**2).sum()), np.sqrt((rx**2).sum())
    if sy <= 1e-12 * max(1.0, np.abs(y).max()) or sx <= 1e-12 * max(1.0, np.abs(x).max()):
        return float("nan")
    return float((ry @ rx) / (sy * sx))


@dataclass(frozen=True)
class ChannelAudit:
    """The audit of every channel: ``summary`` (one row per channel), the covariates used, the
    channel × channel correlation (``redundancy``) and, with ground truth, ``specificity``."""

    summary: pd.DataFrame
    covariates: list[str]
    redundancy: pd.DataFrame
    specificity: SpecificityMatrix | None = None

    @property
    def tiers(self) -> dict[str, str]:
        """Channel → trust tier, for the report's channel colours."""
        return dict(zip(self.summary["channel"], self.summary["tier"]))


def specificity_table(spec: SpecificityMatrix, channels: list[str] | None = None
                      ) -> pd.DataFrame:
    """Per predicted channel: own Pearson/Dice, best other measured channel and its scores, and
    ``off_target`` (another marker matches better than its own, by Pearson)."""
    names = [c for c in (channels or list(PROTEIN_CHANNELS)) if c in spec.pearson.index]
    measured = [c for c in spec.pearson.columns if c in PROTEIN_CHANNELS]
    rows = []
    for ch in names:
        pr = spec.pearson.loc[ch, measured].astype(float)
        dc = spec.dice.loc[ch, measured].astype(float)
        others = pr.drop(ch, errors="ignore").dropna()
        best = str(others.idxmax()) if len(others) else ""
        own = float(pr.get(ch, np.nan))
        best_r = float(others.max()) if len(others) else float("nan")
        rows.append({"channel": ch, "own_pearson": own, "best_other": best,
                     "best_other_pearson": best_r, "own_dice": float(dc.get(ch, np.nan)),
                     "best_other_dice": float(dc.drop(ch, errors="ignore").max()),
                     "off_target": bool(np.isfinite(best_r) and (not np.isfinite(own)
                                                                  or best_r > own))})
    return pd.DataFrame(rows)


def _tier(row: pd.Series) -> str:
    from virtime.models.card import confidence_tier

    tier = confidence_tier(row.get("own_pearson", float("nan")))
    if bool(row.get("off_target", False)):
        tier = "low"
    if bool(row.get("composition_driven", False)):
        tier = _TIER_DOWN[tier]
    return tier


def group_covariates(features: pd.DataFrame, clinical: str | Path | pd.DataFrame
                     ) -> pd.DataFrame:
    """Per slide (row of ``features``), its patient's cancer type and site columns (``site``,
    ``hospital``, … and ``scanner``/``batch``) from the clinical table; NaN where the slide's
    patient is not in it. Slides map to patients by ``patient_id``, else by the clinical
    ``slide_id`` column."""
    from virtime.stats.validation import SITE_COLUMNS, load_clinical

    clin = load_clinical(clinical).table
    cols = [c for c in ("cancer_type", *SITE_COLUMNS, "scanner", "batch") if c in clin.columns]
    if "patient_id" in features.columns:
        key, ids = "patient_id", features["patient_id"].astype(str)
    elif "slide_id" in features.columns and "slide_id" in clin.columns:
        key, ids = "slide_id", features["slide_id"].astype(str)
        clin = clin.dropna(subset=["slide_id"]).astype({"slide_id": str})
    else:
        raise InputDataError("audit: the features table has no patient_id, and the clinical "
                             "table no slide_id to map its slides to patients")
    table = clin.drop_duplicates(key).set_index(key)[cols]
    return table.reindex(ids.to_numpy()).reset_index(drop=True)


def _group_r2(y: pd.Series, groups: pd.DataFrame) -> dict[str, float]:
    """Share of ``y``'s variance each categorical column explains (R² on its indicators)."""
    out = {}
    for col in groups.columns:
        block = pd.concat([y.rename("_y"), groups[col].astype("string").rename("_g")],
                          axis=1).dropna()
        if block["_g"].nunique() < 2 or len(block) < 3:
            out[f"r2.{col}"] = float("nan")
            continue
        dummies = pd.get_dummies(block["_g"], drop_first=True, dtype=float).to_numpy()
        out[f"r2.{col}"] = r_squared(block["_y"].to_numpy(float), dummies)
    return out


def channel_audit(features: pd.DataFrame, *, metric: str = "density",
                  covariates: list[str] | None = None,
                  specificity: SpecificityMatrix | None = None,
                  groups: pd.DataFrame | None = None) -> ChannelAudit:
    """Audits every protein channel's ``<channel>.<metric>`` over the slides (rows) of ``features``.

    ``covariates`` default to :func:`composition_covariates` of the table; a channel that is
    itself a covariate (DAPI) is fitted on the others. Slides with a NaN in a channel or a
    covariate are left out of that channel's fit (``n`` says how many entered). ``groups``
    (categorical columns per slide, e.g. from :func:`group_covariates`) adds ``r2.<column>``:
    the share of the channel's variance that cancer type or site explains.
    """
    covs = composition_covariates(features.columns) if covariates is None else list(covariates)
    missing = [c for c in covs if c not in features.columns]
    if missing:
        raise InputDataError(f"audit: covariate column(s) {missing} not in the features table")
    feats = [f"{c}.{metric}" for c in PROTEIN_CHANNELS if f"{c}.{metric}" in features.columns]
    if not feats:
        raise InputDataError(f"audit: the features table has no '<channel>.{metric}' column")
    values = features[feats].apply(pd.to_numeric, errors="coerce").astype(float)
    cov_values = features[covs].apply(pd.to_numeric, errors="coerce").astype(float)
    corr = values.corr()
    rows = []
    for f in feats:
        ch = f.rsplit(".", 1)[0]
        use = [c for c in covs if c != f]
        block = pd.concat([values[f], cov_values[use]], axis=1).dropna()
        y, x = block[f].to_numpy(), block[use].to_numpy()
        row: dict = {"channel": ch, "feature": f, "n": len(block)}
        if len(block) > len(use) + 2 and np.ptp(y) > 0:
            row["r2_composition"] = r_squared(y, x) if use else float("nan")
            for k, c in enumerate(use):
                row[f"partial_r.{c}"] = partial_correlation(y, x[:, k], np.delete(x, k, axis=1))
        else:
            row["r2_composition"] = float("nan")
        if groups is not None:
            row.update(_group_r2(values[f].reset_index(drop=True), groups))
        others = corr[f].drop(f).abs().dropna()
        row["max_abs_r_other"] = float(others.max()) if len(others) else float("nan")
        row["most_similar"] = (str(others.idxmax()).rsplit(".", 1)[0] if len(others) else "")
        rows.append(row)
    summary = pd.DataFrame(rows)
    summary["composition_driven"] = summary["r2_composition"].fillna(0.0) >= COMPOSITION_R2
    summary["redundant"] = summary["max_abs_r_other"].fillna(0.0) >= REDUNDANT_R
    if specificity is not None:
        summary = summary.merge(specificity_table(specificity, list(summary["channel"])),
                                on="channel", how="left")
        summary["off_target"] = summary["off_target"].astype("boolean").fillna(False).astype(bool)
    summary["tier"] = summary.apply(_tier, axis=1)
    log.info("audit: %d channels, %d composition-driven, %d redundant", len(summary),
             int(summary["composition_driven"].sum()), int(summary["redundant"].sum()))
    corr.index = corr.columns = [f.rsplit(".", 1)[0] for f in feats]
    return ChannelAudit(summary, covs, corr, specificity)
