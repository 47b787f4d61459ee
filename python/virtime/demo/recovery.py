"""Recovery of planted effects: power and false discovery proportion against the truth table.

A *discovery* is a test with q < alpha. It is *true* when the truth table lists the same
(level, group, feature, attribute) with the same direction, as ``primary`` or ``implied``;
otherwise it is *unplanted* (a false discovery). Power counts only ``primary`` rows — the planted
effects of the stated size — that the analysis could test (a group too small, or a class with
too few patients, is listed as not testable rather than missed):

* power = primary rows found (q < alpha, right direction) / primary rows tested
* FDP   = unplanted discoveries / discoveries (0 when nothing was discovered)

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
                    "discoveries", "unplanted", "fdp"]


def _check(frame: pd.DataFrame, cols: list[str], what: str) -> None:
    missing = [c for c in cols if c not in frame.columns]
    if missing:
        raise InputDataError(f"recovery: {what} lacks column(s) {missing}")


def _score(tests: pd.DataFrame, truth: pd.DataFrame, alpha: float, levels: list[str]
           ) -> pd.DataFrame:
    """``tests``: level, group, feature, attribute, direction, q (NaN q = not testable)."""
    tests = tests.astype({k: str for k in _KEYS}).assign(direction=tests["direction"].astype(str))
    truth = truth.astype({k: str for k in _KEYS})
    merged = tests.merge(truth[_KEYS + ["direction", "role"]], on=_KEYS, how="left",
                         suffixes=("", "_truth"))
    if merged.duplicated(_KEYS).any():
        raise InputDataError("recovery: the truth table repeats a (level, group, feature, "
                             "attribute) key")
    sig = merged["q"].to_numpy(float) < alpha
    match = merged["role"].notna().to_numpy() & (merged["direction"] == merged["direction_truth"]
                                                 ).to_numpy()
    primary = truth[truth["role"] == "primary"]
    tested_primary = primary.merge(merged.loc[merged["q"].notna(), _KEYS + ["q", "direction"]],
                                   on=_KEYS, how="inner", suffixes=("", "_test"))
    found = (tested_primary["q"] < alpha) & (tested_primary["direction"]
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
                         "unplanted": false, "fdp": false / disc if disc else 0.0})
    return pd.DataFrame(rows)


def score_associations(summary: pd.DataFrame, truth: pd.DataFrame, *, alpha: float = 0.05,
                       levels: tuple[str, ...] = ("pan-cancer", "cancer_type", "subtype"),
                       survival_attribute: str = "overall survival") -> pd.DataFrame:
    """Power and FDP per level of an association summary (:func:`virtime.stats.associate`)."""
    _check(summary, _KEYS + ["direction", "q"], "association summary")
    _check(truth, _KEYS + ["direction", "role"], "truth table")
    tests = summary[_KEYS + ["direction", "q"]]
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
        if kind == "assoc":
            df = score_associations(summary, truth, alpha=alpha)
            analysis = "associations"
        elif kind == "surv":
            df = score_survival(summary, truth, alpha=alpha)
            analysis = "survival (Cox per channel)"
        else:
            raise InputDataError(f"recovery: keyword {name!r} must end in _assoc or _surv")
        frames.append(df.assign(source=source.replace("_", "-"), analysis=analysis))
    if not frames:
        return pd.DataFrame(columns=RECOVERY_COLUMNS)
    return pd.concat(frames, ignore_index=True)[RECOVERY_COLUMNS]
