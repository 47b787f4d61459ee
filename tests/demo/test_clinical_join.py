"""A simulated cohort's clinical.csv joins a per-slide features table (``features --merge``
shape: ``slide_id`` and features, no ``patient_id``), and a failed join says which column joins."""

from __future__ import annotations

import pandas as pd
import pytest

from virtime.errors import InputDataError

# Six patients: some biomarkers have one class only, which the clinical reader warns about.
pytestmark = pytest.mark.filterwarnings("ignore:.*fewer than two classes:UserWarning")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    from virtime.simulate.cohort_render import simulate_cohort

    root = tmp_path_factory.mktemp("cohort")
    return simulate_cohort(root / "c", 6, slide_px=64, mpp=0.5, feature_mpp=1.0,
                           write_slides=False, show_progress=False, seed=2, prefix="A")


def _merged_shape(cohort) -> pd.DataFrame:
    """What ``virtime features --merge`` writes for the cohort: one row per slide_id, no patient."""
    feats = cohort.truth_features()
    return feats[["slide_id", *[c for c in feats.columns if c.endswith(".density")]]]


def test_clinical_csv_joins_the_merged_features(cohort):
    from virtime.stats import join_features

    merged = _merged_shape(cohort)
    assert "patient_id" not in merged.columns
    joined = join_features(merged, cohort.root / "clinical.csv")
    slides = pd.read_csv(cohort.root / "slides.csv")
    # Each slide lands on its own patient (the slides table is the independent record of who).
    assert sorted(joined.data["patient_id"]) == sorted(slides["patient_id"])
    expect = merged.set_index("slide_id")["CD8.density"].rename(
        index=dict(zip(slides["slide_id"], slides["patient_id"])))
    got = joined.data.set_index("patient_id")["CD8.density"]
    pd.testing.assert_series_equal(got.sort_index(), expect.sort_index(), check_names=False)
    assert joined.features_only == [] and joined.clinical_only == []


def test_join_error_names_ids_of_both_sides_and_the_joining_column(cohort, tmp_path):
    from virtime.stats import join_features

    clinical = pd.read_csv(cohort.root / "clinical.csv").drop(columns=["slide_id"])
    clinical.to_csv(tmp_path / "clinical.csv", index=False)
    with pytest.raises(InputDataError) as err:
        join_features(_merged_shape(cohort), tmp_path / "clinical.csv")
    msg = str(err.value)
    assert "\n" not in msg
    assert "A0001-S1" in msg and "A0001," in msg  # a few ids of each side
    assert "slide_id column" in msg and "clinical" in msg  # the column that would join them
    assert "'A0001-S1' looks like patient 'A0001'" in msg

    # A clinical slide_id column that names other slides: the features' slide ids are shown.
    clinical["slide_id"] = "X" + clinical["patient_id"]
    clinical.to_csv(tmp_path / "clinical3.csv", index=False)
    with pytest.raises(InputDataError, match=r"6 slides, e\.g\. A0001-S1.*none in the clinical "
                                             r"slide_id column.*XA0001"):
        join_features(_merged_shape(cohort), tmp_path / "clinical3.csv")
