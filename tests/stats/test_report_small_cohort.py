"""A cohort too small for any association still gets a report (it crashed on the empty summary)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from virtime.channels import CHANNEL_NAMES, PROTEIN_CHANNELS
from virtime.cli import main


def test_report_on_a_cohort_with_no_tests_is_written(tmp_path, rng) -> None:
    ids = [f"P{i}" for i in range(4)]
    feats = pd.DataFrame({"patient_id": ids,
                          **{f"{c}.density": rng.random(4) for c in PROTEIN_CHANNELS}})
    feats.to_parquet(tmp_path / "f.parquet")
    pd.DataFrame({"patient_id": ids, "cancer_type": ["A"] * 4, "subtype": ["a"] * 4,
                  "MSI-high": [0, 1, 0, 1], "os_time": [10, 20, 30, 40],
                  "os_event": [1, 0, 1, 1]}).to_csv(tmp_path / "c.csv", index=False)
    out = tmp_path / "r.html"
    rc = main(["report", "--features", str(tmp_path / "f.parquet"), "--clinical",
               str(tmp_path / "c.csv"), "-o", str(out), "-q"])
    assert rc == 0 and out.is_file()
    assert len(CHANNEL_NAMES) == 23 and np.isfinite(feats.iloc[:, 1:].to_numpy()).all()


def test_a_constant_biomarker_is_left_out_with_a_warning(tmp_path) -> None:
    """A small cohort where a biomarker has one class: warned and not analysed, not an error."""
    import pytest

    from virtime.stats import load_clinical

    path = tmp_path / "c.csv"
    pd.DataFrame({"patient_id": ["P1", "P2", "P3"], "cancer_type": ["A"] * 3,
                  "subtype": ["a"] * 3, "MSI-high": [0, 0, 0],
                  "KRAS": [0, 1, 0]}).to_csv(path, index=False)
    with pytest.warns(UserWarning, match="'MSI-high' has fewer than two classes"):
        clinical = load_clinical(path)
    assert set(clinical.attributes) == {"KRAS"}
