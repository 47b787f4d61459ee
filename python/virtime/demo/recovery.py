"""Recovery of planted effects: power and false discovery proportion against the truth table.

A *discovery* is a test with q < alpha. It is *true* when the truth table lists the same
(level, group, feature, attribute) with the same direction, as ``primary`` or ``implied``;
otherwise it is *unplanted* (a false discovery). Power counts only ``primary`` rows — the planted
effects of the stated size — that the analysis could test (a group too small, or a class with
too few patients, is listed as not testable rather than missed):

* power = primary rows found (q < alpha, right direction) / primary rows tested
* FDP   = unplanted discoveries / discoveries (0 when nothing was discovered)
* artefact = discoveries on ``artefact`` rows of the truth table (a site's stain look and
  patient mix, no tissue effect): false discoveries the site made; counted in ``unplanted`` too

An association summary is scored three ways when it has the columns: ``associations`` (the
naive q), ``associations (adjusted)`` (``q_adj``, direction from ``effect_adj``) and
``associations (control-flagged)`` (the naive q, discoveries flagged ``control_like`` withheld).

For survival a discovery is a per-channel Cox test with q < alpha; its direction is that of the
hazard as the feature rises (coefficient < 0: ``lower``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from virtime.errors import InputDataError

__all__ = ["CELL_FEATURES", "RECOVERY_COLUMNS", "cell_truth", "recovery_table",
           "score_associations", "score_survival"]

#: Pixel feature of the truth table -> the cell feature that measures the same planted biology
#: (a phenotype's cells per mm², in tissue, nests or stroma).
CELL_FEATURES: dict[str, str] = {
    "CD8.density": "cells.cd8_t.density",
    "CD8.tumour_density": "cells.cd8_t.density_tumour",
    "CD8.stroma_density": "cells.cd8_t.density_stroma",
    "CD4.density": "cells.cd4_t.density",
    "CD20.density": "cells.b_cell.density",
    "CD138.density": "cells.plasma.density",
    "CD68.density": "cells.macrophage.density",
    "CK.density": "cells.tumour.density",
    "Ki67.density": "cells.proliferating.density",
}

_KEYS = ["level", "group", "feature", "attribute"]
RECOVERY_COLUMNS = ["source", "analysis", "level", "planted", "tested", "found", "power",
                    "discoveries", "unplanted", "artefact", "fdp"]
_TRUE_ROLES = ("primary", "implied")


def _check(frame: pd.DataFrame, cols: list[str], what: str) -> None:
    missing = [c for c in cols if c not in frame.columns]
    if missing:
        raise InputDataError(f"recovery: {what} lacks column(s) {missing}")


def _score(tests: pd.DataFrame, truth: pd.DataFrame, alpha: float, levels: list[str]
           ) -> pd.DataFrame:
    """``tests``: level, group, feature, attribute, direction, q (NaN q = not testable) and
    optionally ``withheld`` (discoveries not claimed, e.g. flagged control-like)."""
    tests = tests.astype({k: str for k in _KEYS}).assign(direction=tests["direction"].astype(str))
    truth = truth.astype({k: str for k in _KEYS})
    merged = tests.merge(truth[_KEYS + ["direction", "role"]], on=_KEYS, how="left",
                         suffixes=("", "_truth"))
    if merged.duplicated(_KEYS).any():
        raise InputDataError("recovery: the truth table repeats a (level, group, feature, "
                             "attribute) key")
    withheld = (merged["withheld"].fillna(False).to_numpy(bool) if "withheld" in merged
                else np.zeros(len(merged), dtype=bool))
    sig = (merged["q"].to_numpy(float) < alpha) & ~withheld  # discoveries claimed
    testable = merged["q"].notna().to_numpy()
    match = merged["role"].isin(_TRUE_ROLES).to_numpy() & (
        merged["direction"] == merged["direction_truth"]).to_numpy()
    artefact = (merged["role"] == "artefact").to_numpy()
    primary = truth[truth["role"] == "primary"]
    tested_primary = primary.merge(
        merged.loc[testable, _KEYS + ["direction"]].assign(claimed=sig[testable]),
        on=_KEYS, how="inner", suffixes=("", "_test"))
    found = tested_primary["claimed"] & (tested_primary["direction"]
                                         == tested_primary["direction_test"])
    rows = []
    for level in levels:
        at = (merged["level"] == level).to_numpy()
        pl = primary["level"] == level
        tp = tested_primary["level"] == level
        n_tested, n_found = int(tp.sum()), int((found & tp).sum())
        disc = int((sig & at).sum())
        false = int((sig & at & ~match).sum())
        rows.append({"level": level, "planted": int(pl.sum()), "tested": n_tested, "found": n_found,
                         "power": n_found / n_tested if n_tested else np.nan, "discoveries": disc,
                         "unplanted": false, "artefact": int((sig & at & artefact).sum()),
                         "fdp": false / disc if disc else 0.0})
    return pd.DataFrame(rows)


def score_associations(summary: pd.DataFrame, truth: pd.DataFrame, *, alpha: float = 0.05,
                       levels: tuple[str, ...] = ("pan-cancer", "cancer_type", "subtype"),
                       survival_attribute: str = "overall survival",
                       way: str = "naive") -> pd.DataFrame:
    """Power and FDP per level of an association summary (:func:`virtime.stats.associate`).

    ``way``: ``naive`` (q, direction), ``adjusted`` (q_adj; the direction of effect_adj, the
    naive one where that is undefined) or ``control-flagged`` (q, discoveries flagged
    ``control_like`` withheld).
    """
    _check(summary, _KEYS + ["direction", "q"], "association summary")
    _check(truth, _KEYS + ["direction", "role"], "truth table")
    tests = summary[_KEYS + ["direction", "q"]].copy()
    if way == "adjusted":
        _check(summary, ["q_adj", "effect_adj"], "adjusted association summary")
        eff = summary["effect_adj"].to_numpy(float)
        tests["q"] = summary["q_adj"].to_numpy(float)
        tests["direction"] = np.where(np.isnan(eff), tests["direction"].astype(str),
                                      np.where(eff > 0, "higher", "lower"))
    elif way == "control-flagged":
        _check(summary, ["control_like"], "association summary")
        tests["withheld"] = summary["control_like"].fillna(False).to_numpy(bool)
    elif way != "naive":
        raise InputDataError(f"recovery: way must be naive, adjusted or control-flagged, "
                             f"not {way!r}")
    return _score(tests, truth[truth["attribute"] != survival_attribute], alpha, list(levels))


def score_survival(summary: pd.DataFrame, truth: pd.DataFrame, *, alpha: float = 0.05,
                   attribute: str = "overall survival",
                   levels: tuple[str, ...] = ("pan-cancer", "cancer_type")) -> pd.DataFrame:
    """Power and FDP per level of per-channel Cox tests (:func:`virtime.stats.survival_analysis`)."""
    _check(summary, ["level", "group", "feature", "kind", "cox_coef", "cox_q"], "survival summary")
    ch = summary[summary["kind"] == "channel"]
    tests = pd.DataFrame({
        "level": ch["level"], "group": ch["group"], "feature": ch["feature"],
        "attribute": attribute,
        "direction": np.where(ch["cox_coef"].to_numpy(float) < 0, "lower", "higher"),
        "q": ch["cox_q"].to_numpy(float),
    })
    return _score(tests, truth[truth["attribute"] == attribute], alpha, list(levels))


def cell_truth(truth: pd.DataFrame) -> pd.DataFrame:
    """The truth table's rows that a cell feature measures, renamed to it (:data:`CELL_FEATURES`).

    Scoring cell-feature tests against it gives power and FDP of the planted effects recovered
    through cells; rows of other features (CD3, or channels no phenotype stands for) are dropped.
    """
    _check(truth, ["feature"], "truth table")
    keep = truth[truth["feature"].isin(list(CELL_FEATURES))].copy()
    keep["feature"] = keep["feature"].map(CELL_FEATURES)
    return keep.reset_index(drop=True)


def _naive_control_flags(result: object, alpha: float) -> pd.Series | None:
    """``control_like`` of the naive discoveries (q, effect) against the background channels'
    tests of the same run; None when the run tested no background channel."""
    controls = getattr(result, "control_tests", None)
    if controls is None or not len(controls):
        return None
    from virtime.stats.controls import control_comparison, control_like

    summary = result.summary  # type: ignore[attr-defined]
    comparison = control_comparison(summary, controls, "effect")
    return control_like(summary, comparison, q="q", effect="effect", alpha=alpha)


def recovery_table(truth: pd.DataFrame, *, alpha: float = 0.05, **results: object
                   ) -> pd.DataFrame:
    """One tidy table for several sources, e.g. ``truth_assoc=..., virtual_assoc=...``.

    Keyword names are ``<source>_assoc`` (an AssociationResult) or ``<source>_surv`` (a
    SurvivalResult); ``source`` becomes the first column (``ground-truth``/``virtual`` ...).
    """
    frames = []
    for name, res in results.items():
        source, _, kind = name.rpartition("_")
        if res is None:
            continue
        summary = res.summary  # type: ignore[attr-defined]
        src = source.replace("_", "-")
        if kind == "assoc":
            frames.append(score_associations(summary, truth, alpha=alpha).assign(
                source=src, analysis="associations"))
            if "q_adj" in summary.columns:
                frames.append(score_associations(summary, truth, alpha=alpha, way="adjusted")
                              .assign(source=src, analysis="associations (adjusted)"))
            flags = _naive_control_flags(res, alpha)
            if flags is not None:
                frames.append(score_associations(summary.assign(control_like=flags), truth,
                                                 alpha=alpha, way="control-flagged")
                              .assign(source=src, analysis="associations (control-flagged)"))
        elif kind == "surv":
            frames.append(score_survival(summary, truth, alpha=alpha).assign(
                source=src, analysis="survival (Cox per channel)"))
        else:
            raise InputDataError(f"recovery: keyword {name!r} must end in _assoc or _surv")
    if not frames:
        return pd.DataFrame(columns=RECOVERY_COLUMNS)
    return pd.concat(frames, ignore_index=True)[RECOVERY_COLUMNS]
