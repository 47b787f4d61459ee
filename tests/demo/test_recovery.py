"""Recovery scoring against hand-made truth and test tables (counts worked out by hand)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from virtime.demo.recovery import recovery_table, score_associations, score_survival
from virtime.errors import InputDataError


def _truth() -> pd.DataFrame:
    rows = [
        ("pan-cancer", "all", "CD8.density", "MSI-high", "higher", 1.0, "primary"),
        ("pan-cancer", "all", "Ki67.density", "stage", "higher", 2.0, "primary"),
        ("pan-cancer", "all", "CD3.density", "MSI-high", "higher", 0.3, "implied"),
        ("cancer_type", "Lung", "CD138.density", "KRAS", "higher", 1.5, "primary"),
        ("cancer_type", "Colon", "CD8.density", "MSI-high", "higher", 1.0, "primary"),
        ("pan-cancer", "all", "CD8.density", "overall survival", "lower", 1.0, "primary"),
    ]
    return pd.DataFrame(rows, columns=["level", "group", "feature", "attribute", "direction",
                                       "size", "role"])


def _tests() -> pd.DataFrame:
    rows = [
        # found, right direction
        ("pan-cancer", "all", "CD8.density", "MSI-high", "higher", 0.001),
        # planted but wrong direction: not found, and a false discovery
        ("pan-cancer", "all", "Ki67.density", "stage", "lower", 0.01),
        # implied: a discovery that is not false
        ("pan-cancer", "all", "CD3.density", "MSI-high", "higher", 0.02),
        # unplanted discovery
        ("pan-cancer", "all", "CD20.density", "KRAS", "higher", 0.03),
        # null, not significant
        ("pan-cancer", "all", "CD4.density", "KRAS", "lower", 0.5),
        # planted, tested, missed
        ("cancer_type", "Lung", "CD138.density", "KRAS", "higher", 0.2),
        # planted in Colon but not testable there (q NaN)
        ("cancer_type", "Colon", "CD8.density", "MSI-high", "higher", np.nan),
    ]
    return pd.DataFrame(rows, columns=["level", "group", "feature", "attribute", "direction",
                                       "q"])


def test_association_power_and_fdp_by_hand():
    out = score_associations(_tests(), _truth(), alpha=0.05,
                             levels=("pan-cancer", "cancer_type")).set_index("level")
    pan = out.loc["pan-cancer"]
    assert (pan.planted, pan.tested, pan.found) == (2, 2, 1)
    assert pan.power == pytest.approx(0.5)
    assert (pan.discoveries, pan.unplanted) == (4, 2)  # Ki67 wrong direction + CD20
    assert pan.fdp == pytest.approx(0.5)
    ct = out.loc["cancer_type"]
    assert (ct.planted, ct.tested, ct.found, ct.discoveries) == (2, 1, 0, 0)
    assert ct.power == 0.0 and ct.fdp == 0.0


def test_no_tests_gives_nan_power():
    tests = _tests().iloc[:0]
    out = score_associations(tests, _truth(), levels=("subtype",))
    assert np.isnan(out.loc[0, "power"]) and out.loc[0, "fdp"] == 0.0


def test_survival_direction_from_cox_sign():
    surv = pd.DataFrame({
        "level": ["pan-cancer"] * 3, "group": ["all"] * 3, "kind": ["channel"] * 2 + ["signature"],
        "feature": ["CD8.density", "CD4.density", "signature"],
        "cox_coef": [-0.7, 0.4, np.nan], "cox_q": [0.001, 0.04, np.nan]})
    out = score_survival(surv, _truth(), levels=("pan-cancer",)).iloc[0]
    assert (out.tested, out.found, out.discoveries, out.unplanted) == (1, 1, 2, 1)
    flipped = surv.assign(cox_coef=[0.7, 0.4, np.nan])
    out = score_survival(flipped, _truth(), levels=("pan-cancer",)).iloc[0]
    assert (out.found, out.unplanted) == (0, 2)


def test_recovery_table_and_bad_input():
    class R:  # the result objects only need a summary
        def __init__(self, summary):
            self.summary = summary

    tab = recovery_table(_truth(), ground_truth_assoc=R(_tests()), virtual_assoc=None)
    assert set(tab["source"]) == {"ground-truth"} and len(tab) == 3
    with pytest.raises(InputDataError):
        recovery_table(_truth(), x_bad=R(_tests()))
    with pytest.raises(InputDataError, match="lacks"):
        score_associations(_tests().drop(columns=["q"]), _truth())


def _with_artefact() -> tuple[pd.DataFrame, pd.DataFrame]:
    truth = pd.concat([_truth(), pd.DataFrame(
        [("pan-cancer", "all", "CD20.density", "KMT2D", "either", np.nan, "artefact"),
         ("pan-cancer", "all", "CD68.density", "KMT2D", "either", np.nan, "artefact")],
        columns=_truth().columns)], ignore_index=True)
    tests = _tests()
    tests = pd.concat([tests, pd.DataFrame(
        [("pan-cancer", "all", "CD20.density", "KMT2D", "lower", 0.001),
         ("pan-cancer", "all", "CD68.density", "KMT2D", "lower", 0.3)],
        columns=tests.columns)], ignore_index=True)
    # adjusted: the artefact is gone, the planted CD8 effect stays, Ki67 turns the right way
    tests["q_adj"] = [0.002, 0.01, 0.2, 0.5, 0.5, 0.04, np.nan, 0.6, 0.7]
    tests["effect_adj"] = [0.5, 0.3, 0.1, 0.1, -0.1, 0.2, np.nan, -0.05, 0.0]
    # control-flagged: CD20 ~ KMT2D and the CD20 ~ KRAS discovery look like the controls
    tests["control_like"] = [False, False, False, True, False, False, False, True, False]
    return truth, tests


def test_artefact_discoveries_are_false_and_counted_by_way():
    truth, tests = _with_artefact()
    lv = ("pan-cancer", "cancer_type")
    naive = score_associations(tests, truth, levels=lv).set_index("level").loc["pan-cancer"]
    assert (naive.discoveries, naive.unplanted, naive.artefact) == (5, 3, 1)
    assert naive.fdp == pytest.approx(3 / 5) and naive.found == 1
    adj = score_associations(tests, truth, levels=lv, way="adjusted").set_index("level")
    pan = adj.loc["pan-cancer"]
    assert (pan.discoveries, pan.unplanted, pan.artefact, pan.found) == (2, 0, 0, 2)
    assert pan.power == 1.0 and pan.fdp == 0.0
    assert adj.loc["cancer_type", "found"] == 1  # Lung CD138 ~ KRAS: q_adj 0.04
    flagged = score_associations(tests, truth, levels=lv, way="control-flagged")
    pan = flagged.set_index("level").loc["pan-cancer"]
    assert (pan.discoveries, pan.unplanted, pan.artefact) == (3, 1, 0)
    rec = recovery_table(truth, virtual_assoc=type("R", (), {"summary": tests})())
    assert set(rec["analysis"]) == {"associations", "associations (adjusted)"}
    with pytest.raises(InputDataError, match="way"):
        score_associations(tests, truth, way="both")
