"""Negative-control channels: TRITC/Cy5 tested beside the proteins, outside the FDR families."""

from __future__ import annotations

import pytest
from scipy import stats

from virtime.stats import associate, join_features


@pytest.fixture
def tables(rng, cohort_factory):
    feats, clin = cohort_factory(rng, per_subtype=25)
    pos = clin["KRAS"].eq("mutated").to_numpy()
    feats["TRITC.density"] = rng.normal(size=len(feats)) + 0.9 * pos  # composition-like signal
    feats["Cy5.density"] = rng.normal(size=len(feats))
    feats["CD8.density"] += 0.5 * pos  # real but no stronger than the background
    feats["CK.density"] += 2.5 * pos  # far stronger than the background
    return feats, clin


def _rank_biserial(x, y):
    u = stats.mannwhitneyu(x[y == 1], x[y == 0]).statistic
    return 2 * u / ((y == 1).sum() * (y == 0).sum()) - 1


def test_controls_stay_out_of_the_families_and_count_channels_beating_them(tables):
    feats, clin = tables
    cohort = join_features(feats, clin)
    assert cohort.controls == ["TRITC.density", "Cy5.density"]
    assert not {"TRITC.density", "Cy5.density"} & set(cohort.features)
    res = associate(cohort, levels=("pan-cancer",), attributes=("KRAS",), adjust="none")
    bare = associate(join_features(feats.drop(columns=["TRITC.density", "Cy5.density"]), clin),
                     levels=("pan-cancer",), attributes=("KRAS",), adjust="none")
    assert res.summary.equals(bare.summary)  # the protein table does not change
    assert set(res.control_tests["feature"]) == {"TRITC.density", "Cy5.density"}
    d = cohort.data
    y = d["KRAS"].to_numpy()
    ctrl = max(abs(_rank_biserial(d[c].to_numpy(), y)) for c in cohort.controls)
    beat = sum(abs(_rank_biserial(d[f].to_numpy(), y)) > ctrl for f in cohort.features)
    row = res.controls.iloc[0]
    assert (row.level, row.attribute, row.metric) == ("pan-cancer", "KRAS", "density")
    assert row.control_feature == "TRITC.density"
    assert row.control_effect == pytest.approx(ctrl, rel=1e-12)
    assert row.n_protein == 21 and row.n_beating == beat
    by_level = res.controls_by_level().iloc[0]
    assert (by_level.level, by_level.attribute, by_level.n_beating) == ("pan-cancer", "KRAS", beat)


def test_discoveries_no_stronger_than_the_background_are_control_like(tables):
    feats, clin = tables
    res = associate(join_features(feats, clin), levels=("pan-cancer",), attributes=("KRAS",))
    s = res.summary.set_index("feature")
    assert s.loc["CD8.density", "q_adj"] < 0.05 and bool(s.loc["CD8.density", "control_like"])
    assert s.loc["CK.density", "q_adj"] < 0.05 and not bool(s.loc["CK.density", "control_like"])
    assert not s["control_like"][s["q_adj"] >= 0.05].any()
    flags = res.control_like()
    assert flags.equals(res.summary["control_like"])


def test_without_background_features_control_like_is_unknown(rng, cohort_factory):
    feats, clin = cohort_factory(rng, per_subtype=15)
    res = associate(join_features(feats, clin), levels=("pan-cancer",), attributes=("KRAS",))
    assert res.controls.empty and res.summary["control_like"].isna().all()


def test_survival_runs_the_background_channels_as_controls(rng, cohort_factory):
    import pandas as pd
    from lifelines import CoxPHFitter

    from virtime.stats import survival_analysis

    feats, clin = cohort_factory(rng, per_subtype=20, hazard={"CD8.density": 0.5})
    feats["TRITC.density"] = rng.normal(size=len(feats))
    feats["Cy5.density"] = rng.normal(size=len(feats))
    cohort = join_features(feats, clin)
    res = survival_analysis(cohort, levels=("pan-cancer",), signature=False)
    assert set(res.controls["feature"]) == {"TRITC.density", "Cy5.density"}
    assert "TRITC.density" not in set(res.summary["feature"])
    d = cohort.data
    bounds = []
    for c in cohort.controls:
        frame = pd.DataFrame({"t": d.os_time, "e": d.os_event, "x": d[c] / d[c].std(ddof=1),
                              "ct": d.cancer_type})
        bounds.append(abs(CoxPHFitter().fit(frame, "t", "e", strata=["ct"]).params_["x"]))
    row = res.control_comparison.iloc[0]
    assert row.control_effect == pytest.approx(max(bounds), rel=1e-4)
    assert row.n_protein == 21
    assert row.n_beating == int((res.summary["cox_coef_adj"].abs() > max(bounds)).sum())
    assert "control_like" in res.summary.columns
