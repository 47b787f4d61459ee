"""``virtime demo`` end to end on a tiny cohort (tiny slides, tiny random translator).

Same code path as the default demo: simulate two cohorts, translate every slide with one reused
engine, features, associations, survival, cross-cohort validation, recovery, report; then a
rerun that must skip the finished work.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:demo.*:UserWarning")
@pytest.mark.filterwarnings("ignore:.*no tissue pixels.*:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:join loses.*")
def test_demo_cli_end_to_end_and_resume(tmp_path, tiny_demo_weights, capsys):
    from virtime.cli import main

    out = tmp_path / "demo"
    argv = ["demo", "-o", str(out), "--patients", "30", "--second-patients", "12",
            "--slide-px", "256", "--weights", str(tiny_demo_weights), "-q"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "Recovery of planted effects" in printed and "ground-truth" in printed
    rec = pd.read_csv(out / "recovery.csv")
    assert set(rec["source"]) == {"ground-truth", "virtual", "virtual-cells"}  # cells (#19)
    assert set(rec["level"]) >= {"pan-cancer", "cancer_type"}
    # each association analysis scored naive, adjusted for the site and with the background
    # channels as negative controls
    assert {"associations", "associations (adjusted)", "associations (control-flagged)"} <= set(
        rec.loc[rec.source == "virtual", "analysis"])
    # Recovery counts agree with the association table and the truth table written beside it.
    truth = pd.read_csv(out / "cohort_a" / "truth.csv")
    gt = pd.read_csv(out / "associations_ground_truth.csv")
    pan = rec[(rec.source == "ground-truth") & (rec.analysis == "associations")
              & (rec.level == "pan-cancer")].iloc[0]
    assert pan.discoveries == int(((gt.level == "pan-cancer") & (gt.q < 0.05)).sum())
    assert pan.planted == int(((truth.level == "pan-cancer") & (truth.role == "primary")
                               & (truth.attribute != "overall survival")).sum())
    # Every slide of both cohorts was translated with the given model.
    for cohort, n in (("cohort_a", 30), ("cohort_b", 12)):
        summaries = list((out / cohort / "virtual").glob("*/summary.json"))
        assert len(summaries) == n
        assert all(json.loads(p.read_text())["status"] == "done" for p in summaries)
    html = (out / "report.html").read_text()
    for title in ("Recovery of planted effects", "Cross-cohort validation", "Survival",
                  "Associations"):
        assert title in html
    assert (out / "cross_cohort.csv").is_file()
    # The cohort's clinical.csv joins its own `features --merge` table (slide ids only).
    from virtime.stats import join_features

    merged = tmp_path / "merged.parquet"
    assert main(["features", "--merge", str(out / "cohort_a" / "virtual"), "-o", str(merged)]) == 0
    joined = join_features(merged, out / "cohort_a" / "clinical.csv",
                           feature_names=["CD8.density", "CK.density"])
    slides = pd.read_csv(out / "cohort_a" / "slides.csv")
    assert sorted(joined.data["patient_id"]) == sorted(slides["patient_id"])
    stamp = {p: p.stat().st_mtime_ns for p in (out / "cohort_a" / "virtual").glob("*/summary.json")}
    # Rerun: nothing is rendered or translated again; the analysis gives the same numbers.
    assert main(argv) == 0
    assert {p: p.stat().st_mtime_ns for p in stamp} == stamp
    pd.testing.assert_frame_equal(pd.read_csv(out / "recovery.csv"), rec)
    summary = json.loads((out / "demo_summary.json").read_text())
    assert summary["timings_seconds"]["translate"] < 5
