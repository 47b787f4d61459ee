"""virtime's own feature tables are valid inputs (issue 15, defects 4 and 12): a categorical
``immune.phenotype``, features undefined (NaN) on some or all slides, slide descriptors and QC
columns, unknown dotted columns, and patient ids with leading zeros."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from virtime.errors import InputDataError
from virtime.stats import associate, join_features, survival_analysis

PHENO = np.array(["inflamed", "excluded", "desert", "undetermined"])


def _own_table(rng, n=160):
    """A slide table shaped like ``features --merge`` output, with planted effects: MSI-positive
    patients are mostly ``inflamed`` and have higher CD8.snr (undefined on a quarter of them)."""
    pid = [f"{i:03d}" for i in range(n)]
    msi = (np.arange(n) % 2).astype(int)
    pheno = np.where(msi == 1, rng.choice(PHENO, n, p=[0.7, 0.1, 0.1, 0.1]),
                     rng.choice(PHENO, n, p=[0.1, 0.4, 0.4, 0.1]))
    snr = rng.normal(size=n) + 1.0 * msi
    snr[rng.random(n) < 0.25] = np.nan
    feats = pd.DataFrame({
        "slide_id": [f"S{p}" for p in pid], "patient_id": pid,
        "tissue.pixels": rng.integers(1000, 5000, n).astype(float),
        "tissue.area_mm2": rng.random(n), "tiles_failed": 0, "tissue_mm2_failed": 0.0,
        "qc.failed_share_exceeded": False,
        "CD8.density": rng.normal(size=n), "CD8.snr": snr, "CD4.snr": np.nan,
        "CD3|CD8.or_density": rng.normal(size=n), "tumour.area_fraction": rng.random(n),
        "immune.phenotype": pheno,
    })
    t = rng.exponential(365.0 * np.exp(-0.8 * np.nan_to_num(snr)))
    clin = pd.DataFrame({"patient_id": pid, "cancer_type": "LUNG", "subtype": "LUAD",
                         "MSI": msi, "os_time": t.round(1), "os_event": 1})
    return feats, clin


def test_categorical_and_undefined_features_are_analysed_per_test(rng, tmp_path):
    feats, clin = _own_table(rng)
    feats.to_parquet(tmp_path / "f.parquet")
    clin.to_csv(tmp_path / "c.csv", index=False)
    with pytest.warns(UserWarning, match=r"undefined \(NaN\) on every slide.*CD4\.snr"):
        cohort = join_features(tmp_path / "f.parquet", tmp_path / "c.csv")
    assert "CD4.snr" not in cohort.features
    assert {"immune.phenotype=inflamed", "immune.phenotype=desert",
            "immune.phenotype=excluded"} <= set(cohort.features)
    assert "immune.phenotype=undetermined" not in cohort.features  # undefined, not a category
    assert not any(f.startswith(("tissue.", "qc.")) for f in cohort.features)
    assert cohort.data["patient_id"].iloc[0] == "000"  # leading zeros kept through the CSV

    s = associate(cohort, levels=("pan-cancer",)).summary.set_index("feature")
    d = cohort.data
    # categorical: the indicator of "inflamed" against MSI, patients with a defined phenotype
    ind = d["immune.phenotype=inflamed"]
    ok = ind.notna()
    ref = stats.mannwhitneyu(ind[ok & (d.MSI == 1)], ind[ok & (d.MSI == 0)])
    row = s.loc["immune.phenotype=inflamed"]
    assert row.n == ok.sum() and row.p == pytest.approx(ref.pvalue, rel=1e-8)
    assert row.q < 1e-6 and row.direction == "higher"  # the planted effect
    # NaN feature: tested on the patients where it is defined
    ok = d["CD8.snr"].notna()
    ref = stats.mannwhitneyu(d["CD8.snr"][ok & (d.MSI == 1)], d["CD8.snr"][ok & (d.MSI == 0)])
    row = s.loc["CD8.snr"]
    assert row.n == ok.sum() < len(d) and row.p == pytest.approx(ref.pvalue, rel=1e-8)
    assert row.q < 1e-4
    # the other features are tested on everyone, with the BH family over all defined p
    assert s.loc["CD8.density"].n == len(d)

    from lifelines.statistics import logrank_test

    surv = survival_analysis(cohort, features=("CD8.snr", "CD8.density"), signature=False,
                             levels=("pan-cancer",)).summary.set_index("feature")
    x = d.loc[ok, "CD8.snr"]
    hi = x > x.median()
    t, e = d.loc[ok, "os_time"], d.loc[ok, "os_event"]
    ref = logrank_test(t[hi], t[~hi], e[hi], e[~hi])
    assert surv.loc["CD8.snr", "n"] == ok.sum()
    assert surv.loc["CD8.snr", "logrank_p"] == pytest.approx(ref.p_value, rel=1e-6)


def test_unknown_dotted_columns_are_not_analysed(rng):
    feats, clin = _own_table(rng, n=60)
    feats = feats.drop(columns="CD4.snr").assign(**{"age.years": rng.normal(size=60),
                                                   "FOO.density": rng.normal(size=60)})
    with pytest.warns(UserWarning, match=r"2 column\(s\) are not virtime features.*"
                                         r"age\.years, FOO\.density") as rec:
        cohort = join_features(feats, clin)
    assert len(rec) == 1  # tissue.*, qc.* and undotted QC columns are silently not features
    assert "age.years" not in cohort.features and "FOO.density" not in cohort.features
    explicit = join_features(feats, clin, feature_names=["age.years", "CD8.density"])
    assert explicit.features == ["age.years", "CD8.density"]
    with pytest.raises(InputDataError, match="not in the table: nope.density"):
        join_features(feats, clin, feature_names=["nope.density"])


def test_ids_with_leading_zeros_join_and_mismatches_are_named(rng, tmp_path):
    feats, clin = _own_table(rng, n=40)
    feats = feats.drop(columns="CD4.snr")
    clin.to_csv(tmp_path / "c.csv", index=False)
    cohort = join_features(feats, tmp_path / "c.csv")  # "007" in the CSV stays "007"
    assert len(cohort.data) == 40 and not cohort.features_only
    stripped = feats.assign(patient_id=feats["patient_id"].astype(int))  # 7, not "007"
    with pytest.raises(InputDataError, match=r"no patient_id in common.*e\.g\. 0, 1, 10.*"
                                             r"differ only in leading zeros.*'1' vs '001'"):
        join_features(stripped, tmp_path / "c.csv")


def test_features_without_patient_id_map_through_clinical_slide_id(rng):
    feats, clin = _own_table(rng, n=40)
    feats = feats.drop(columns=["CD4.snr", "patient_id"])
    clin["slide_id"] = [f"S{p}" for p in clin["patient_id"]]
    cohort = join_features(feats, clin)
    assert len(cohort.data) == 40
    got = cohort.data.set_index("patient_id")["CD8.density"]
    np.testing.assert_allclose(got.loc["005"], feats["CD8.density"].iloc[5])
