"""Adjusted associations against independent references (scipy per stratum, statsmodels fits)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import stats

from virtime.cli import main
from virtime.errors import InvalidArgumentError
from virtime.stats import associate, join_features

FEATURES = ("CD8.density", "CK.density", "Ki67.density")


@pytest.fixture
def cohort(rng, cohort_factory):
    feats, clin = cohort_factory(rng, per_subtype=25, plant=("CD8.density", "KRAS", "LUAD", 1.0))
    clin["site"] = rng.choice(["H1", "H2", "H3"], size=len(clin))
    clin["age"] = rng.normal(60, 10, size=len(clin)).round(1)
    feats["CK.density"] = feats["CK.density"].round(1)  # ties within strata
    return join_features(feats, clin)


def _van_elteren_reference(x, y, strata):
    """Σ_s (U_s − n1 n2 / 2)/(n_s + 1) over sqrt(Σ_s Var(U_s)/(n_s + 1)²), U_s from scipy and
    Var(U_s) = n1 n2/12 · ((n + 1) − Σ(t³ − t)/(n(n − 1))) with the ties of the stratum."""
    num = var = 0.0
    for s in np.unique(strata):
        xs, ys = x[strata == s], y[strata == s]
        a, b = xs[ys == 1], xs[ys == 0]
        if len(a) == 0 or len(b) == 0:
            continue
        n1, n2, n = len(a), len(b), len(xs)
        u = stats.mannwhitneyu(a, b, method="asymptotic").statistic
        _, t = np.unique(xs, return_counts=True)
        v = n1 * n2 / 12.0 * ((n + 1) - (t**3 - t).sum() / (n * (n - 1)))
        num += (u - n1 * n2 / 2) / (n + 1)
        var += v / (n + 1) ** 2
    z = num / np.sqrt(var)
    return 2 * stats.norm.sf(abs(z))


def _trend_reference(x, y, strata):
    """Σ_s w_s Σ (r_x − r̄)(r_y − r̄) over sqrt(Σ_s w_s² S_xx S_yy/(n_s − 1)), ranks by scipy."""
    num = var = 0.0
    for s in np.unique(strata):
        rx = stats.rankdata(x[strata == s])
        ry = stats.rankdata(y[strata == s])
        n = len(rx)
        xc, yc = rx - rx.mean(), ry - ry.mean()
        if n < 2 or (yc**2).sum() == 0:
            continue
        w = 1.0 / (n + 1)
        num += w * (xc @ yc)
        var += w**2 * (xc @ xc) * (yc @ yc) / (n - 1)
    return 2 * stats.norm.sf(abs(num / np.sqrt(var)))


def test_van_elteren_and_stratified_trend_match_per_stratum_references(cohort):
    res = associate(cohort, levels=("pan-cancer",), features=FEATURES, attributes=("KRAS", "stage"))
    s = res.summary.set_index(["feature", "attribute"])
    d = cohort.data
    strata = (d["cancer_type"] + "/" + d["site"]).to_numpy()
    for f in FEATURES:
        x = d[f].to_numpy()
        row = s.loc[(f, "KRAS")]
        assert row.test_adj == "van-elteren" and row.covariates == "cancer_type, site"
        ref = _van_elteren_reference(x, d["KRAS"].to_numpy(), strata)
        assert row.p_adj == pytest.approx(ref, rel=1e-9)
        row = s.loc[(f, "stage")]
        assert row.test_adj == "stratified-trend"
        assert row.p_adj == pytest.approx(_trend_reference(x, d["stage"].to_numpy(), strata),
                                          rel=1e-9)
        assert row.n_adj == len(d)


def test_logistic_adjustment_equals_statsmodels_on_the_same_design(cohort):
    res = associate(cohort, levels=("pan-cancer",), features=FEATURES, attributes=("KRAS",),
                    adjust=("cancer_type", "age"))
    d = cohort.data
    dummies = pd.get_dummies(d["cancer_type"], drop_first=True, dtype=float)
    for f in FEATURES:
        x = d[f].to_numpy()
        design = np.column_stack([np.ones(len(d)), (x - x.mean()) / x.std(ddof=1),
                                  d["age"].to_numpy(), dummies.to_numpy()])
        fit = sm.Logit(d["KRAS"].to_numpy(), design).fit(disp=0)
        row = res.summary[res.summary.feature == f].iloc[0]
        assert row.test_adj == "logistic" and row.covariates == "cancer_type, age"
        assert row.p_adj == pytest.approx(fit.pvalues[1], rel=1e-6)
        assert row.effect_adj == pytest.approx(fit.params[1], rel=1e-6)


def test_rank_linear_adjustment_equals_statsmodels_ols(cohort):
    res = associate(cohort, levels=("pan-cancer",), features=FEATURES, attributes=("TMB",),
                    adjust=("age", "site"))
    d = cohort.data
    dummies = pd.get_dummies(d["site"], drop_first=True, dtype=float).to_numpy()
    for f in FEATURES:
        design = np.column_stack([np.ones(len(d)), stats.rankdata(d[f]), d["age"], dummies])
        fit = sm.OLS(stats.rankdata(d["TMB"]), design).fit()
        row = res.summary[res.summary.feature == f].iloc[0]
        assert row.test_adj == "rank-linear"
        assert row.p_adj == pytest.approx(fit.pvalues[1], rel=1e-8)


def test_one_stratum_adjusted_equals_unadjusted_exactly(cohort):
    d = cohort.data.copy()
    d["site"] = "H1"
    one = type(cohort)(d, cohort.features, cohort.attributes)
    s = associate(one, features=FEATURES, adjust=("site",)).summary
    assert (s.p_adj.to_numpy() == s.p.to_numpy()).all()
    assert (s.effect_adj.to_numpy() == s.effect.to_numpy()).all()
    assert (s.n_adj == s.n).all()
    # a second stratum of one patient carries no information: same numbers on the others
    d.loc[d.index[0], "site"] = "H2"
    s2 = associate(type(cohort)(d, cohort.features, cohort.attributes), features=FEATURES,
                   levels=("subtype",), attributes=("KRAS",), adjust=("site",)).summary
    row = s2[(s2.group == d.loc[d.index[0], "subtype"]) & (s2.feature == "CD8.density")].iloc[0]
    g = d[(d.subtype == row.group) & (d.index != d.index[0])]
    ref = stats.mannwhitneyu(g.loc[g.KRAS == 1, "CD8.density"], g.loc[g.KRAS == 0, "CD8.density"])
    assert row.n_adj == row.n - 1 and "left out" in row.note_adj
    assert row.p_adj == pytest.approx(ref.pvalue, rel=1e-9)


def test_patients_missing_a_covariate_are_counted(cohort):
    d = cohort.data.copy()
    d.loc[d.index[:7], "site"] = np.nan
    s = associate(type(cohort)(d, cohort.features, cohort.attributes), features=FEATURES,
                  levels=("pan-cancer",), attributes=("KRAS",)).summary
    assert (s.n == len(d)).all() and (s.n_adj == len(d) - 7).all()


def test_bad_covariates_are_one_line_or_a_noted_nan(cohort, tmp_path, capsys):
    with pytest.raises(InvalidArgumentError, match="'smoker'"):
        associate(cohort, adjust=("smoker",))
    d = cohort.data.copy()
    d["empty"] = np.nan
    d["age2"] = d["age"] * 2.0  # collinear with age
    d["patient_code"] = np.arange(len(d)).astype(str)  # one level per patient
    c = type(cohort)(d, cohort.features, cohort.attributes)
    with pytest.raises(InvalidArgumentError, match=r"\(NaN\) for every patient"):
        associate(c, adjust=("empty",))
    s = associate(c, features=FEATURES, levels=("pan-cancer",), adjust=("age", "age2")).summary
    assert s.p_adj.isna().all() and s.note_adj.str.contains("collinear").all()
    assert s.p.notna().all()
    s = associate(c, features=FEATURES, levels=("pan-cancer",),
                  adjust=("age", "patient_code")).summary
    assert s.p_adj.isna().all() and s.note_adj.str.contains("too many covariate").all()
    # constant within the group: does not enter, adjusted = unadjusted
    s = associate(c, features=FEATURES, levels=("cancer_type",), adjust=("cancer_type",)).summary
    assert (s.covariates == "").all() and (s.p_adj == s.p).all()
    # the CLI: one line, exit 2
    feats = d[["patient_id", *FEATURES]]
    feats.to_csv(tmp_path / "f.csv", index=False)
    clinical = ["patient_id", "cancer_type", "subtype", "stage", "KRAS", "site", "age"]
    d[clinical].to_csv(tmp_path / "c.csv", index=False)
    rc = main(["associate", "--features", str(tmp_path / "f.csv"), "--clinical",
               str(tmp_path / "c.csv"), "-o", str(tmp_path / "a.csv"), "--adjust", "smoker", "-q"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and "smoker" in err and "Traceback" not in err


def test_feature_explained_by_covariates_and_separation_are_noted(cohort, rng):
    d = cohort.data.copy()
    d["CK.density"] = d["KRAS"] + rng.normal(scale=0.01, size=len(d))  # separates KRAS
    c = type(cohort)(d, cohort.features, cohort.attributes)
    s = associate(c, features=FEATURES, levels=("pan-cancer",), attributes=("KRAS",),
                  adjust=("CD8.density", "age")).summary.set_index("feature")
    assert np.isnan(s.loc["CD8.density", "p_adj"])
    assert "explained by the covariates" in s.loc["CD8.density", "note_adj"]
    assert np.isnan(s.loc["CK.density", "p_adj"]) and "separation" in s.loc["CK.density",
                                                                            "note_adj"]
    assert np.isfinite(s.loc["Ki67.density", "p_adj"])


def test_tissue_area_is_a_covariate_not_a_feature(rng, cohort_factory):
    feats, clin = cohort_factory(rng, per_subtype=15)
    feats["tissue.area_mm2"] = rng.gamma(5.0, 20.0, size=len(feats))
    cohort = join_features(feats, clin)
    assert "tissue.area_mm2" not in cohort.features and "tissue.area_mm2" in cohort.data
    s = associate(cohort, features=FEATURES, levels=("pan-cancer",), attributes=("TMB",),
                  adjust=("tissue.area_mm2",)).summary
    d = cohort.data
    design = np.column_stack([np.ones(len(d)), stats.rankdata(d["CK.density"]),
                              d["tissue.area_mm2"]])
    fit = sm.OLS(stats.rankdata(d["TMB"]), design).fit()
    row = s[s.feature == "CK.density"].iloc[0]
    assert row.covariates == "tissue.area_mm2" and row.p_adj == pytest.approx(fit.pvalues[1],
                                                                               rel=1e-8)
