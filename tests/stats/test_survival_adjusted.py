"""Adjusted survival: stratified Cox against lifelines' ``strata=``, covariates as lifelines."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter

from virtime.stats import join_features, survival_analysis
from virtime.stats.cox import cox_fit

FEATURES = ("CD8.density", "CD3.density")


@pytest.fixture
def cohort(rng, cohort_factory):
    feats, clin = cohort_factory(rng, per_subtype=30, hazard={"CD3.density": 0.4})
    clin["site"] = rng.choice(["H1", "H2", "H3"], size=len(clin))
    clin["age"] = rng.normal(60, 10, size=len(clin)).round(1)
    return join_features(feats, clin)


def test_stratified_cox_equals_lifelines_strata(cohort):
    d = cohort.data
    x = d["CD3.density"].to_numpy()
    frame = pd.DataFrame({"t": d.os_time, "e": d.os_event, "x": x, "age": d.age,
                          "site": d.site})
    ref = CoxPHFitter().fit(frame, "t", "e", strata=["site"])
    fit = cox_fit(d.os_time.to_numpy(), d.os_event.to_numpy(), frame[["x", "age"]].to_numpy(),
                  strata=d.site.to_numpy())
    assert fit.ok
    np.testing.assert_allclose(fit.coef, ref.params_[["x", "age"]], rtol=1e-4)
    np.testing.assert_allclose(fit.se, ref.standard_errors_[["x", "age"]], rtol=1e-4)
    np.testing.assert_allclose(fit.p, ref.summary.loc[["x", "age"], "p"], rtol=1e-4)


def test_survival_adjusted_rows_equal_lifelines_on_the_same_design(cohort):
    res = survival_analysis(cohort, levels=("pan-cancer",), features=FEATURES, signature=False,
                            adjust=("cancer_type", "site", "age"))
    d = cohort.data
    for f in FEATURES:
        row = res.summary[res.summary.feature == f].iloc[0]
        x = d[f].to_numpy()
        frame = pd.DataFrame({"t": d.os_time, "e": d.os_event, "x": x / x.std(ddof=1),
                              "age": d.age, "ct": d.cancer_type, "site": d.site})
        ref = CoxPHFitter().fit(frame, "t", "e", strata=["ct", "site"])
        assert row.covariates == "cancer_type, site, age" and row.n_adj == len(d)
        assert row.cox_coef_adj == pytest.approx(ref.params_["x"], rel=1e-4)
        assert row.cox_p_adj == pytest.approx(ref.summary.loc["x", "p"], rel=1e-4)
    assert res.summary.cox_q_adj.notna().all()


def test_survival_default_stratifies_by_cancer_type_and_site(cohort):
    res = survival_analysis(cohort, features=FEATURES, signature=False)
    s = res.summary
    pan = s[s.level == "pan-cancer"]
    assert (pan.covariates == "cancer_type, site").all()
    assert (s[s.level == "cancer_type"].covariates == "subtype, site").all()
    d = cohort.data
    x = d["CD8.density"].to_numpy()
    frame = pd.DataFrame({"t": d.os_time, "e": d.os_event, "x": x / x.std(ddof=1),
                          "ct": d.cancer_type, "site": d.site})
    ref = CoxPHFitter().fit(frame, "t", "e", strata=["ct", "site"])
    row = pan[pan.feature == "CD8.density"].iloc[0]
    assert row.cox_p_adj == pytest.approx(ref.summary.loc["x", "p"], rel=1e-4)


def test_one_stratum_survival_adjusted_equals_unadjusted(cohort):
    d = cohort.data.copy()
    d["site"] = "H1"
    one = type(cohort)(d, cohort.features, cohort.attributes)
    s = survival_analysis(one, levels=("cancer_type",), features=FEATURES, signature=False,
                          adjust=("site",)).summary
    assert (s.cox_p_adj.to_numpy() == s.cox_p.to_numpy()).all() and (s.covariates == "").all()
