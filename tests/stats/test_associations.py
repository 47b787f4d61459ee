"""Associations: agreement with scipy per test, planted effects found, FDR held under the null."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from virtime.stats import associate, combination_comparison, join_features, metric_comparison


def _cohort(rng, factory, **kw):
    feats, clin = factory(rng, **kw)
    return join_features(feats, clin)


def test_rows_agree_with_scipy(rng, cohort_factory):
    cohort = _cohort(rng, cohort_factory, per_subtype=40)
    res = associate(cohort, levels=("cancer_type",))
    s = res.summary
    d = cohort.data[cohort.data["cancer_type"] == "LUNG"]
    row = s[(s.group == "LUNG") & (s.feature == "CD8.density") & (s.attribute == "KRAS")].iloc[0]
    x, y = d["CD8.density"], d["KRAS"]
    ref = stats.mannwhitneyu(x[y == 1], x[y == 0], method="asymptotic")
    assert row.p == pytest.approx(ref.pvalue, rel=1e-9)
    assert row.effect == pytest.approx(2 * ref.statistic / ((y == 1).sum() * (y == 0).sum()) - 1)
    row = s[(s.group == "LUNG") & (s.feature == "CD4.density") & (s.attribute == "TMB")].iloc[0]
    assert row.p == pytest.approx(stats.spearmanr(d["CD4.density"], d["TMB"]).pvalue, rel=1e-8)
    row = s[(s.group == "LUNG") & (s.feature == "CK.density") & (s.attribute == "stage")].iloc[0]
    assert row.effect == pytest.approx(stats.spearmanr(d["CK.density"], d["stage"]).statistic)
    # q is BH within the LUNG family only
    fam = s[(s.group == "LUNG")]
    np.testing.assert_allclose(fam.q, multipletests(fam.p, method="fdr_bh")[1])
    kw = associate(cohort, levels=("cancer_type",), stage_test="kruskal").summary
    row = kw[(kw.group == "LUNG") & (kw.feature == "CK.density") & (kw.attribute == "stage")].iloc[0]
    ref = stats.kruskal(*[g["CK.density"] for _, g in d.groupby("stage")])
    assert row.p == pytest.approx(ref.pvalue, rel=1e-8)


def test_planted_effect_found_only_where_planted(rng, cohort_factory):
    cohort = _cohort(rng, cohort_factory, per_subtype=150,
                     plant=("CD8.density", "KRAS", "LUAD", 1.2))
    res = associate(cohort)
    sig = res.significant()
    hit = sig[(sig.level == "subtype") & (sig.group == "LUAD") & (sig.feature == "CD8.density")
              & (sig.attribute == "KRAS")]
    assert len(hit) == 1 and hit.iloc[0].direction == "higher"
    # other subtypes carry no effect: discoveries there are false, and stay rare (BH at 5%)
    other = sig[(sig.level == "subtype") & (sig.group != "LUAD")]
    tests_other = ((res.summary.level == "subtype") & (res.summary.group != "LUAD")).sum()
    assert len(other) <= 0.01 * tests_other
    # within LUAD, the planted pair is the only discovery, or nearly
    luad = sig[(sig.level == "subtype") & (sig.group == "LUAD")]
    assert len(luad) <= 3


def test_null_fdr_over_seeds(cohort_factory):
    """Complete null: P(any discovery in a family) = FDR ≤ 5% (BH); without correction ≫."""
    families = with_discovery = raw_families = 0
    for seed in range(12):
        r = np.random.default_rng(seed)
        res = associate(_cohort(r, cohort_factory, per_subtype=60), min_patients=30)
        s = res.summary
        for _, fam in s.groupby(["level", "group"], observed=True):
            families += 1
            with_discovery += bool((fam.q < 0.05).any())
            raw_families += bool((fam.p < 0.05).any())
    assert families == 12 * 13
    assert with_discovery / families <= 0.09  # 0.05 + sampling slack (sd ≈ 0.017)
    assert raw_families / families > 0.9  # uncorrected testing would flood the table


def test_constant_feature_excluded_and_reported(rng, cohort_factory):
    feats, clin = cohort_factory(rng, per_subtype=40)
    feats["Ki67.density"] = 0.3
    res = associate(join_features(feats, clin), levels=("pan-cancer",))
    s = res.summary
    const = s[s.feature == "Ki67.density"]
    assert const.p.isna().all() and const.q.isna().all()
    assert const.note.str.contains("excluded").all()
    assert res.excluded == len(const)
    rest = s[s.feature != "Ki67.density"]
    np.testing.assert_allclose(rest.q, multipletests(rest.p, method="fdr_bh")[1])


def test_group_filters_and_skips(rng, cohort_factory):
    cohort = _cohort(rng, cohort_factory, per_subtype=25)
    res = associate(cohort, min_patients=30, min_per_class=5)
    assert set(res.summary.level) == {"pan-cancer", "cancer_type"}  # subtypes have 25 < 30
    assert (res.skipped.level == "subtype").sum() == 8
    res2 = associate(cohort, levels=("pan-cancer",), min_per_class=150)
    assert "MSI" not in set(res2.summary.attribute.astype(str))  # classes ~100 < 150


def test_metric_and_combination_comparison(rng, cohort_factory):
    feats, clin = cohort_factory(rng, per_subtype=60, metrics=("density", "entropy"))
    pos = (clin["KRAS"] == "mutated").to_numpy()
    # OR density stronger than either single channel: both singles carry half the signal
    feats["CD138.density"] += 0.25 * pos
    feats["CD68.density"] += 0.25 * pos
    feats["CD138|CD68.or_density"] = feats["CD138.density"] + feats["CD68.density"] \
        + rng.normal(scale=0.1, size=len(feats))
    feats["CD8.entropy"] += 0.8 * pos
    feats["CD4.entropy"] += 0.8 * pos
    res = associate(join_features(feats, clin), levels=("pan-cancer",))
    mc = metric_comparison(res)
    assert mc.loc["entropy", "total"] >= 2 > mc.loc["density", "total"] - 2
    assert mc.loc["density", "tests"] == mc.loc["entropy", "tests"]
    cc = combination_comparison(res)
    row = cc[(cc.pair == "CD138|CD68.or_density") & (cc.attribute == "KRAS")].iloc[0]
    assert row.operation == "or" and row.gain > 0 and row.q_pair < row.q_a


def test_many_groups_families_stay_separate(rng):
    """> 127 subtypes (int8 category codes) must still give one family per level × group."""
    import pandas as pd

    n_sub, per = 140, 20
    n = n_sub * per
    clin = pd.DataFrame({"patient_id": [f"P{i}" for i in range(n)],
                         "cancer_type": "ONE", "subtype": np.repeat([f"S{k:03d}" for k in
                                                                    range(n_sub)], per),
                         "TMB": rng.normal(size=n)})
    feats = pd.DataFrame({"patient_id": clin["patient_id"], "A.density": rng.normal(size=n),
                          "B.density": rng.normal(size=n)})
    cohort = join_features(feats, clin, feature_names=["A.density", "B.density"])
    s = associate(cohort, levels=("subtype",), min_patients=10).summary
    assert s.group.nunique() == n_sub
    for _, fam in list(s.groupby("group", observed=True))[-3:]:
        np.testing.assert_allclose(fam.q, multipletests(fam.p, method="fdr_bh")[1])
