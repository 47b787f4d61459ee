"""A cohort too small for any association still gets a report (it crashed on the empty summary)."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from virtime.channels import PROTEIN_CHANNELS
from virtime.cli import main


def _tiny_cohort(tmp_path, rng) -> None:
    """Four patients of one cancer type: too few for any test."""
    ids = [f"P{i}" for i in range(4)]
    pd.DataFrame({"patient_id": ids, **{f"{c}.density": rng.random(4) for c in PROTEIN_CHANNELS}}
                 ).to_parquet(tmp_path / "f.parquet")
    pd.DataFrame({"patient_id": ids, "cancer_type": ["A"] * 4, "subtype": ["a"] * 4,
                  "MSI-high": [0, 1, 0, 1], "os_time": [10, 20, 30, 40],
                  "os_event": [1, 0, 1, 1]}).to_csv(tmp_path / "c.csv", index=False)


def test_report_on_a_cohort_with_no_tests_is_written(tmp_path, rng) -> None:
    _tiny_cohort(tmp_path, rng)
    out = tmp_path / "r.html"
    rc = main(["report", "--features", str(tmp_path / "f.parquet"), "--clinical",
               str(tmp_path / "c.csv"), "-o", str(out), "-q"])
    assert rc == 0 and out.is_file()
    html = out.read_text()
    assert re.findall(r"<h2[^>]*>([^<]+)</h2>", html)[:4] == [
        "Cohort summary", "Population TIME spectrum", "Associations", "Survival"]
    assert "4 patients, 1 cancer types" in html  # the cohort it was given


def test_report_gallery_without_slides_is_refused_before_any_analysis(tmp_path, rng,
                                                                      monkeypatch) -> None:
    import virtime.stats

    _tiny_cohort(tmp_path, rng)
    monkeypatch.setattr(virtime.stats, "associate",
                        lambda *a, **k: pytest.fail("analysed before checking its arguments"))
    rc = main(["report", "--features", str(tmp_path / "f.parquet"), "--clinical",
               str(tmp_path / "c.csv"), "-o", str(tmp_path / "r.html"), "-q",
               "--gallery-feature", "CD8.density"])
    assert rc == 2 and not (tmp_path / "r.html").exists()


def test_a_constant_biomarker_is_left_out_with_a_warning(tmp_path) -> None:
    """A small cohort where a biomarker has one class: warned and not analysed, not an error."""
    from virtime.stats import load_clinical

    path = tmp_path / "c.csv"
    pd.DataFrame({"patient_id": ["P1", "P2", "P3"], "cancer_type": ["A"] * 3,
                  "subtype": ["a"] * 3, "MSI-high": [0, 0, 0],
                  "KRAS": [0, 1, 0]}).to_csv(path, index=False)
    with pytest.warns(UserWarning, match="'MSI-high' has fewer than two classes"):
        clinical = load_clinical(path)
    assert set(clinical.attributes) == {"KRAS"}
