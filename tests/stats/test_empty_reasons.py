"""Empty or partly skipped results say which rule emptied them and which flag to change."""

from __future__ import annotations

import pytest

from virtime.cli import main


@pytest.fixture
def files(tmp_path, rng, cohort_factory):
    feats, clin = cohort_factory(rng, per_subtype=12)
    clin.loc[clin.index[3:], "MSI"] = 0
    clin.loc[clin.index[:3], "MSI"] = 1  # 3 positives in the whole cohort
    feats.to_parquet(tmp_path / "features.parquet")
    clin.to_csv(tmp_path / "clinical.csv", index=False)
    return tmp_path, clin, ["--features", str(tmp_path / "features.parquet"),
                            "--clinical", str(tmp_path / "clinical.csv"), "-q"]


def test_associate_below_min_patients_names_the_rule(files, capsys):
    tmp, clin, args = files
    assert main(["associate", *args, "-o", str(tmp / "a.csv"), "--min-patients", "500",
                 "--levels", "pan-cancer", "cancer_type"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("0 tests")
    reason = next(ln for ln in out.splitlines() if ln.startswith("no test ran"))
    largest = len(clin)  # the pan-cancer group is the largest: every patient
    assert "fewer than 500 patients" in reason and f"--min-patients {largest}" in reason


def test_associate_small_class_names_min_per_class(files, capsys):
    tmp, clin, args = files
    assert main(["associate", *args, "-o", str(tmp / "a.csv"), "--levels", "pan-cancer"]) == 0
    out = capsys.readouterr().out
    reason = next(ln for ln in out.splitlines() if "skipped" in ln)
    assert f"pan-cancer/all (n = {len(clin)})" in reason and "--min-per-class" in reason


def test_survival_skips_name_events_and_patients(files, capsys):
    tmp, clin, args = files
    events = int(clin["os_event"].sum())
    assert main(["survival", *args, "-o", str(tmp / "s.csv"), "--levels", "pan-cancer",
                 "--min-events", str(events + 1)]) == 0
    out = capsys.readouterr().out
    reason = next(ln for ln in out.splitlines() if ln.startswith("no survival test ran"))
    assert f"pan-cancer/all ({len(clin)} patients, {events} events)" in reason
    assert "--min-events" in reason and "--min-patients" not in reason


def test_report_shows_the_reason_instead_of_an_empty_table(files):
    tmp, clin, args = files
    assert main(["report", *args, "-o", str(tmp / "r.html"), "--min-patients", "500",
                 "--levels", "pan-cancer", "--no-survival"]) == 0
    html = (tmp / "r.html").read_text()
    section = html.split("<h2>Associations</h2>", 1)[1]
    assert f"--min-patients {len(clin)}" in section
    assert "Top associations" not in section and "<table" not in section
