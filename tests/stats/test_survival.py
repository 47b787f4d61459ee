"""Survival: log-rank and Cox against R on lifelines' lung data; signature honest under the null."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter
from lifelines.datasets import load_lung
from scipy import stats

from virtime.errors import InputDataError
from virtime.stats import join_features, signature_risk, survival_analysis
from virtime.stats.cox import cox_fit
from virtime.stats.logrank import logrank


@pytest.fixture(scope="module")
def lung() -> pd.DataFrame:
    d = load_lung()
    # lifelines ships R's survival::lung with status recoded 0/1 (1 = death); sex 1 male, 2 female
    assert {"time", "status", "age", "sex"} <= set(d.columns)
    assert set(d["status"]) == {0, 1} and len(d) == 228
    return d


def test_logrank_lung_by_sex_matches_r_survdiff(lung):
    # R: survdiff(Surv(time, status) ~ sex, data = lung) → Chisq = 10.3, p = 0.00131
    res = logrank(lung["time"], lung["status"], lung["sex"])
    assert res.chi2 == pytest.approx(10.3267, abs=5e-4)
    assert res.p == pytest.approx(0.00131116, rel=1e-4)
    assert res.df == 1 and res.sizes == {"1": 138, "2": 90}


def test_cox_lung_age_sex_matches_r_coxph(lung):
    # R: coxph(Surv(time, status) ~ age + sex, data = lung): coef 0.01704, -0.51322 (Efron ties)
    res = cox_fit(lung["time"], lung["status"], lung[["age", "sex"]].to_numpy())
    assert res.ok
    np.testing.assert_allclose(res.coef, [0.0170, -0.5132], atol=5e-5)
    np.testing.assert_allclose(res.se, [0.00922, 0.1675], rtol=2e-3)


@pytest.mark.parametrize("k", [2, 3])
def test_logrank_matches_lifelines_with_ties(rng, k):
    from lifelines.statistics import multivariate_logrank_test

    t = np.round(rng.exponential(size=300), 1)  # many tied times
    e = (rng.uniform(size=300) < 0.6).astype(float)
    g = rng.integers(0, k, 300)
    t[g == 1] *= 1.3
    ref = multivariate_logrank_test(t, g, e)
    res = logrank(t, e, g)
    assert res.chi2 == pytest.approx(ref.test_statistic, rel=1e-9)
    assert res.p == pytest.approx(ref.p_value, rel=1e-9)
    assert res.df == k - 1


@pytest.mark.parametrize("penalizer", [0.0, 0.1, 1.0])
def test_cox_matches_lifelines(lung, penalizer):
    ref = CoxPHFitter(penalizer=penalizer).fit(lung[["time", "status", "age", "sex"]],
                                               "time", "status")
    res = cox_fit(lung["time"], lung["status"], lung[["age", "sex"]].to_numpy(),
                  penalizer=penalizer)
    np.testing.assert_allclose(res.coef, ref.params_.to_numpy(), rtol=1e-4)
    np.testing.assert_allclose(res.se, ref.standard_errors_.to_numpy(), rtol=1e-3)


def test_cox_separation_and_constant_are_failures(rng):
    x = np.r_[np.zeros(20), np.ones(20)]
    t = np.r_[rng.exponential(1, 20), 100 + rng.exponential(1, 20)]
    res = cox_fit(t, np.ones(40), x)
    assert not res.ok and "separation" in res.message and np.isnan(res.coef).all()
    assert "constant" in cox_fit(t, np.ones(40), np.ones(40)).message


def test_invalid_survival_rejected_before_lifelines():
    with pytest.raises(InputDataError, match="non-finite"):
        logrank(np.array([1.0, np.nan, 2.0, 3.0]), np.array([1, 0, 1, 1]), np.array([0, 0, 1, 1]))
    with pytest.raises(InputDataError, match="0/1"):
        logrank(np.array([1.0, 2, 3, 4]), np.array([1, 2, 1, 2]), np.array([0, 0, 1, 1]))


def test_planted_hazard_found(rng, cohort_factory):
    feats, clin = cohort_factory(rng, per_subtype=60, hazard={"CD8.density": -0.7})
    res = survival_analysis(join_features(feats, clin), folds=3)
    s = res.summary
    pan = s[s.level == "pan-cancer"].set_index("feature")
    assert pan.loc["CD8.density", "logrank_q"] < 1e-3
    assert pan.loc["CD8.density", "cox_hr"] < 0.7
    others = pan[(pan.kind == "channel") & (pan.index != "CD8.density")]
    assert (others.logrank_q < 0.05).sum() <= 1
    assert pan.loc["signature", "logrank_p"] < 1e-3
    assert set(s.group) == {"all", "LUNG", "BOWEL", "BREAST", "SKIN"}
    sc = res.signature_scores
    assert sc[sc.level == "pan-cancer"].risk.notna().all()
    tert = survival_analysis(join_features(feats, clin), levels=("pan-cancer",), split="tertiles",
                             signature=False)
    assert tert.summary.set_index("feature").loc["CD8.density", "logrank_p"] < 1e-3


def test_signature_out_of_fold_is_calibrated_in_sample_is_not():
    """Null cohort (21 noise channels): OOF log-rank p ~ uniform; in-sample p piles up near 0."""
    oof, ins = [], []
    for seed in range(30):
        r = np.random.default_rng(1000 + seed)
        n = 120
        x = r.normal(size=(n, 21))
        t = r.exponential(size=n)
        e = (r.uniform(size=n) < 0.8).astype(float)
        oof.append(signature_risk(t, e, x, folds=5, seed=seed).logrank.p)
        ins.append(signature_risk(t, e, x, in_sample=True).logrank.p)
    oof, ins = np.array(oof), np.array(ins)
    assert stats.kstest(oof, "uniform").pvalue > 0.01
    assert (oof < 0.05).mean() <= 0.2
    assert (ins < 0.05).mean() >= 0.5  # optimistic: the split was fitted on the same patients
    assert np.median(ins) < np.median(oof) / 5


def test_signature_permutation_p(rng):
    n = 150
    x = rng.normal(size=(n, 21))
    t = rng.exponential(np.exp(-0.8 * x[:, 0]))
    e = np.ones(n)
    strong = signature_risk(t, e, x, folds=3, n_permutations=19)
    assert strong.permutation_p == pytest.approx(1 / 20)  # nothing beats the real fit
    null = signature_risk(rng.permutation(t), e, x, folds=3, n_permutations=19)
    assert null.permutation_p > 0.05
