"""Channel audit: R² and partial correlations against statsmodels and the precision matrix,
planted composition-driven and off-target channels, and the specificity matrix against the
per-channel protocol run on each (predicted, measured) pair."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

from virtime.channels import CHANNEL_NAMES, PROTEIN_CHANNELS
from virtime.errors import InputDataError
from virtime.evaluation.metrics import EvalAccumulator
from virtime.evaluation.specificity import (
    SpecificityAccumulator,
    SpecificityMatrix,
    read_specificity,
)
from virtime.stats.audit import (
    COMPOSITION_R2,
    channel_audit,
    partial_correlation,
    r_squared,
)


def _slides(rng: np.random.Generator, n: int = 200) -> pd.DataFrame:
    """Slide table: independent channel densities; CD68 = cellularity + a little noise."""
    df = pd.DataFrame({c + ".density": rng.gamma(4.0, 0.02, n) for c in PROTEIN_CHANNELS})
    df["tissue.area_mm2"] = rng.uniform(1, 5, n)
    df["TRITC.density"] = rng.gamma(3.0, 0.01, n)
    df["CD68.density"] = df["DAPI.density"] * 0.5 + rng.normal(0, 0.002, n)
    df.insert(0, "slide_id", [f"S{i}" for i in range(n)])
    return df


def test_r2_and_partial_correlation_match_statsmodels_and_precision_matrix(rng):
    n = 150
    x = rng.normal(size=(n, 3))
    y = 0.8 * x[:, 0] - 0.5 * x[:, 1] + rng.normal(size=n)
    ols = sm.OLS(y, sm.add_constant(x)).fit()
    assert r_squared(y, x) == pytest.approx(ols.rsquared, rel=1e-10)
    # partial r of y and x0 given x1, x2: from the inverse of the joint correlation matrix
    prec = np.linalg.inv(np.corrcoef(np.column_stack([y, x]).T))
    expected = -prec[0, 1] / np.sqrt(prec[0, 0] * prec[1, 1])
    assert partial_correlation(y, x[:, 0], x[:, 1:]) == pytest.approx(expected, rel=1e-9)
    # and from statsmodels residuals
    ry = sm.OLS(y, sm.add_constant(x[:, 1:])).fit().resid
    rx = sm.OLS(x[:, 0], sm.add_constant(x[:, 1:])).fit().resid
    assert partial_correlation(y, x[:, 0], x[:, 1:]) == pytest.approx(
        np.corrcoef(ry, rx)[0, 1], rel=1e-9)


def test_planted_copy_of_cellularity_is_composition_driven(rng):
    df = _slides(rng)
    audit = channel_audit(df)
    assert audit.covariates == ["DAPI.density", "tissue.area_mm2", "TRITC.density"]
    s = audit.summary.set_index("channel")
    cov = df[audit.covariates].to_numpy()
    ref = sm.OLS(df["CD68.density"], sm.add_constant(cov)).fit().rsquared
    assert s.loc["CD68", "r2_composition"] == pytest.approx(ref, rel=1e-9)
    assert s.loc["CD68", "r2_composition"] > 0.95
    assert s.loc["CD68", "partial_r.DAPI.density"] > 0.95
    assert bool(s.loc["CD68", "composition_driven"])
    assert s.loc["CD68", "tier"] == "low"
    # CD68 and DAPI carry one signal: redundant with each other
    assert s.loc["CD68", "most_similar"] == "DAPI" and bool(s.loc["CD68", "redundant"])
    others = s.drop(index=["CD68", "DAPI"])
    assert (others["r2_composition"] < COMPOSITION_R2).all()
    assert not others["composition_driven"].any() and not others["redundant"].any()
    assert (others["tier"] == "unknown").all()
    # DAPI is fitted on the other covariates, not on itself
    assert "partial_r.DAPI.density" not in s.columns or np.isnan(s.loc["DAPI",
                                                                        "partial_r.DAPI.density"])
    assert s.loc["DAPI", "r2_composition"] < COMPOSITION_R2


def test_missing_covariate_and_missing_channels_are_one_clear_error(rng):
    df = _slides(rng, 20)
    with pytest.raises(InputDataError, match="age"):
        channel_audit(df, covariates=["age"])
    with pytest.raises(InputDataError, match="no '<channel>.density'"):
        channel_audit(df[["slide_id", "tissue.area_mm2"]])


def test_nan_slides_are_left_out_per_channel_and_counted(rng):
    df = _slides(rng, 60)
    df.loc[:9, "CD8.density"] = np.nan
    s = channel_audit(df).summary.set_index("channel")
    assert s.loc["CD8", "n"] == 50 and s.loc["CD3", "n"] == 60


def _planted_specificity() -> SpecificityMatrix:
    names = list(CHANNEL_NAMES)
    p = pd.DataFrame(0.05, index=names, columns=names)
    d = pd.DataFrame(0.1, index=names, columns=names)
    for c in names:
        p.loc[c, c], d.loc[c, c] = 0.6, 0.5
    p.loc["CD68", "CD68"], p.loc["CD68", "CD3"] = 0.2, 0.45  # virtual CD68 paints T cells
    d.loc["CD68", "CD3"] = 0.6
    p.loc["CD20", "CD20"] = 0.35
    return SpecificityMatrix(p, d)


def test_channel_matching_another_marker_better_is_flagged_and_lowers_its_tier(rng, tmp_path):
    spec = _planted_specificity()
    spec.write(tmp_path)
    back = read_specificity(tmp_path)
    pd.testing.assert_frame_equal(back.pearson, spec.pearson)
    audit = channel_audit(_slides(rng), specificity=back)
    s = audit.summary.set_index("channel")
    assert bool(s.loc["CD68", "off_target"]) and s.loc["CD68", "best_other"] == "CD3"
    assert s.loc["CD68", "best_other_pearson"] == pytest.approx(0.45)
    assert s.loc["CD68", "tier"] == "low"
    assert not s.drop(index="CD68")["off_target"].any()
    assert s.loc["CD8", "tier"] == "high" and s.loc["CD20", "tier"] == "medium"
    assert audit.tiers["CD8"] == "high"


def test_unreadable_specificity_folder_is_one_clear_error(tmp_path):
    with pytest.raises(InputDataError, match="specificity_pearson.csv"):
        read_specificity(tmp_path)


def test_specificity_matrix_equals_the_per_channel_protocol_on_each_pair(rng):
    n, c, h = 3, 4, 32
    targets = np.zeros((n, c, h, h), bool)
    targets[:, 0, 4:20, 4:20] = True
    targets[:, 1] = rng.random((n, h, h)) < 0.2
    targets[:, 2, :, :16] = True
    probs = rng.random((n, c, h, h)).astype(np.float32) * 0.6
    probs[:, 3] += targets[:, 0] * 0.5  # predicted channel 3 paints measured channel 0
    names = ("A", "B", "C", "D")
    acc = SpecificityAccumulator(channels=names)
    acc.update(probs[:2], targets[:2])
    acc.update(probs[2:], targets[2:])
    res = acc.result()
    for i in range(c):
        for j in range(c):
            ref = EvalAccumulator(channels=("x",))
            ref.update(probs[:, [i]], targets[:, [j]])
            row = ref.summary().iloc[0]
            np.testing.assert_allclose(res.pearson.iloc[i, j], row["pearson"], rtol=1e-9,
                                       equal_nan=True)
            np.testing.assert_allclose(res.dice.iloc[i, j], row["dice"], rtol=1e-9,
                                       equal_nan=True)
    assert res.pearson.loc["D", "A"] > 0.9 > res.pearson.loc["D", "B"]  # D paints A
    assert np.isnan(res.pearson.loc["D", "D"])  # measured D is empty: undefined


def test_site_share_of_variance_matches_a_one_way_anova(rng, tmp_path):
    df = _slides(rng, 120)
    df["patient_id"] = [f"P{i}" for i in range(len(df))]
    site = np.where(np.arange(len(df)) % 3 == 0, "B", "A")
    df.loc[site == "B", "CD8.density"] += 0.05  # a site look on one channel
    clin = pd.DataFrame({"patient_id": df["patient_id"], "cancer_type": "X", "subtype": "Y",
                         "site": site})
    clin.to_csv(tmp_path / "clin.csv", index=False)
    from virtime.stats.audit import group_covariates

    groups = group_covariates(df, tmp_path / "clin.csv")
    s = channel_audit(df, groups=groups).summary.set_index("channel")
    y = df["CD8.density"].to_numpy()
    ss_between = sum((site == g).sum() * (y[site == g].mean() - y.mean()) ** 2 for g in "AB")
    assert s.loc["CD8", "r2.site"] == pytest.approx(ss_between / ((y - y.mean()) ** 2).sum())
    assert s.loc["CD8", "r2.site"] > 0.3 > s.loc["CD3", "r2.site"]
    assert np.isnan(s.loc["CD8", "r2.cancer_type"])  # one cancer type: nothing to explain


def test_audit_cli_prints_flags_and_writes_table_and_tiers(rng, tmp_path, capsys):
    import json

    from virtime.cli import main

    df = _slides(rng, 80)
    df.to_csv(tmp_path / "f.csv", index=False)
    _planted_specificity().write(tmp_path / "ev")
    code = main(["audit", "--features", str(tmp_path / "f.csv"), "--evaluation",
                 str(tmp_path / "ev"), "-o", str(tmp_path / "audit.csv"), "--tiers-json",
                 str(tmp_path / "tiers.json")])
    out = capsys.readouterr().out
    assert code == 0
    assert "composition_driven: CD68" in out and "off_target: CD68" in out
    table = pd.read_csv(tmp_path / "audit.csv").set_index("channel")
    assert bool(table.loc["CD68", "composition_driven"])
    tiers = json.loads((tmp_path / "tiers.json").read_text())
    assert tiers["CD68"] == "low" and tiers["CD8"] == "high"
    from virtime.report import load_tiers  # the report reads the derived tiers back

    assert load_tiers(tmp_path / "tiers.json") == tiers
    assert main(["audit", "--features", str(tmp_path / "f.csv"), "--evaluation",
                 str(tmp_path / "missing")]) == 2
    assert "specificity_pearson.csv" in capsys.readouterr().err


def test_report_takes_the_audit_tiers_for_its_channel_colours(rng, tmp_path, monkeypatch,
                                                               cohort_factory):
    import virtime.stats.plots as plots
    from virtime.cli import main

    feats, clin = cohort_factory(rng, per_subtype=20)
    feats["DAPI.density"] = feats["CD8.density"] + rng.normal(0, 0.01, len(feats))
    feats["tissue.area_mm2"] = rng.uniform(1, 4, len(feats))
    feats.to_parquet(tmp_path / "f.parquet")
    clin.to_csv(tmp_path / "c.csv", index=False)
    _planted_specificity().write(tmp_path / "ev")
    seen = []
    real = plots.bubble_grid

    def spy(*a, **kw):
        seen.append(kw.get("tiers"))
        return real(*a, **kw)

    monkeypatch.setattr(plots, "bubble_grid", spy)
    assert main(["report", "--features", str(tmp_path / "f.parquet"), "--clinical",
                 str(tmp_path / "c.csv"), "-o", str(tmp_path / "r.html"), "--levels",
                 "pan-cancer", "--no-survival", "--evaluation", str(tmp_path / "ev"),
                 "-q"]) == 0
    html = (tmp_path / "r.html").read_text()
    assert "<h2>Channel audit</h2>" in html and "Predicted channel (rows)" in html
    tiers = seen[0]
    # planted: CD68 off target → low; CD8 a copy of cellularity → high lowered to medium
    assert tiers["CD68"] == "low" and tiers["CD8"] == "medium" and tiers["CD3"] == "high"
