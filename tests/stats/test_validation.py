"""Validation of the features and clinical tables: one clear error per problem."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from virtime.errors import InputDataError
from virtime.stats import (
    join_features,
    load_clinical,
    parse_stage,
    validate_features,
    validate_survival,
)


@pytest.fixture
def tables(rng, cohort_factory):
    return cohort_factory(rng, per_subtype=10)


def test_roundtrip_files_and_aggregation(tmp_path, rng, cohort_factory):
    feats, clin = cohort_factory(rng, per_subtype=10, slides_per_patient=3)
    feats.to_parquet(tmp_path / "f.parquet")
    clin.to_csv(tmp_path / "c.csv", index=False)
    cohort = join_features(tmp_path / "f.parquet", tmp_path / "c.csv")
    assert len(cohort.data) == len(clin)
    assert cohort.attributes == {"stage": "stage", "KRAS": "binary", "MSI": "binary",
                                 "TMB": "continuous"}
    ref = feats.groupby("patient_id")["CD8.density"].mean()
    got = cohort.data.set_index("patient_id")["CD8.density"]
    np.testing.assert_allclose(got.loc[ref.index], ref)
    assert (cohort.data["n_slides"] == 3).all()
    # mutated → 1, wild-type → 0
    assert set(cohort.data["KRAS"]) == {0.0, 1.0}
    assert (cohort.data["KRAS"] == 1).sum() == (clin["KRAS"] == "mutated").sum()


@pytest.mark.parametrize("mutate, match", [
    (lambda c: c.drop(columns="subtype"), "missing required column.*subtype"),
    (lambda c: pd.concat([c, c.iloc[:1]]), "duplicate patient_id"),
    (lambda c: c.assign(os_event=c["os_event"] + 1), "events must be 0/1"),
    (lambda c: c.assign(os_time=-c["os_time"]), "negative survival time"),
    (lambda c: c.assign(os_time=np.where(np.arange(len(c)) == 0, np.inf, c["os_time"])),
     "non-finite survival time"),
    (lambda c: c.assign(stage=np.where(np.arange(len(c)) == 0, "Stage V", c["stage"])),
     "unknown stage label.*Stage V"),
    (lambda c: c.assign(KRAS=np.where(np.arange(len(c)) % 2, "foo", "bar")),
     "cannot tell the positive class"),
])
def test_clinical_errors(tables, mutate, match):
    _, clin = tables
    with pytest.raises(InputDataError, match=match):
        load_clinical(mutate(clin.copy()))


def test_feature_errors(tables):
    feats, _ = tables
    bad = feats.copy()
    bad.loc[3, "CD8.density"] = np.inf
    with pytest.raises(InputDataError, match=r"infinite feature value.*CD8\.density"):
        validate_features(bad)
    with pytest.raises(InputDataError, match="duplicate slide_id"):
        validate_features(pd.concat([feats, feats.iloc[:2]]))
    with pytest.raises(InputDataError, match="missing required column.*patient_id"):
        validate_features(feats.drop(columns=["patient_id", "slide_id"]))


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(InputDataError, match="nope.csv: clinical file not found"):
        load_clinical(tmp_path / "nope.csv")
    p = tmp_path / "c.csv"
    p.write_text("patient_id,cancer_type\nA,LUNG\n")
    with pytest.raises(InputDataError, match=r"c\.csv: missing required column.*subtype"):
        load_clinical(p)


def test_join_loss_is_reported(tables, caplog):
    feats, clin = tables
    with caplog.at_level(logging.WARNING, logger="virtime.stats.validation"):
        cohort = join_features(feats.iloc[5:], clin.iloc[:-2])
    assert cohort.features_only == sorted(clin["patient_id"].iloc[-2:])
    assert cohort.clinical_only == sorted(clin["patient_id"].iloc[:5])
    assert "join loses 5 patient(s) present in clinical" in caplog.text
    with pytest.raises(InputDataError, match="join loses 2 patient"):
        join_features(feats, clin.iloc[:-2], strict=True)
    with pytest.raises(InputDataError, match="no patient_id in common"):
        join_features(feats, clin.assign(patient_id="X" + clin["patient_id"]))


def test_stage_parsing():
    s = parse_stage(pd.Series(["I", "IIB", "Stage IIIA", "iv", 0, "3", None, "IVC"]))
    np.testing.assert_array_equal(s.to_numpy()[:6], [1, 2, 3, 4, 0, 3])
    assert np.isnan(s.iloc[6]) and s.iloc[7] == 4


def test_missing_survival_must_be_missing_together(tables):
    _, clin = tables
    c = clin.copy()
    c.loc[0, "os_time"] = np.nan
    with pytest.raises(InputDataError, match="missing unequally"):
        load_clinical(c)
    c.loc[0, "os_event"] = np.nan
    assert load_clinical(c).has_survival
    with pytest.raises(InputDataError, match="events must be 0/1"):
        validate_survival(np.array([1.0, 2.0]), np.array([1, 2]))
