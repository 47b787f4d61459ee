"""QC-flagged slides (qc_failed_share_exceeded) stay out of the statistics unless asked for."""

from __future__ import annotations

import pandas as pd
import pytest

from virtime.cli import main
from virtime.stats import associate, join_features


@pytest.fixture
def flagged_files(tmp_path, rng, cohort_factory):
    feats, clin = cohort_factory(rng, per_subtype=15)
    feats["qc_failed_share_exceeded"] = False
    feats.loc[[0, 5, 17], "qc_failed_share_exceeded"] = True
    feats.to_csv(tmp_path / "features.csv", index=False)  # the flag as True/False text
    clin.to_csv(tmp_path / "clinical.csv", index=False)
    flagged = set(feats.loc[[0, 5, 17], "patient_id"])
    return tmp_path, flagged, ["--features", str(tmp_path / "features.csv"),
                               "--clinical", str(tmp_path / "clinical.csv")]


def test_library_leaves_flagged_slides_out(flagged_files):
    tmp, flagged, _ = flagged_files
    cohort = join_features(tmp / "features.csv", tmp / "clinical.csv")
    assert len(cohort.data) == 120 - 3 and not flagged & set(cohort.data["patient_id"])
    assert len(cohort.qc_excluded) == 3
    kept = join_features(tmp / "features.csv", tmp / "clinical.csv", keep_qc_failed=True)
    assert len(kept.data) == 120 and not kept.qc_excluded


@pytest.mark.parametrize("command", ["validate", "associate", "survival"])
def test_cli_counts_and_keeps_on_request(flagged_files, capsys, command):
    tmp, _, args = flagged_files
    out = [] if command == "validate" else ["-o", str(tmp / f"{command}.csv"), "-q",
                                             "--levels", "pan-cancer"]
    extra = ["--no-signature", "--min-events", "3"] if command == "survival" else []
    assert main([command, *args, *out, *extra]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "qc_failed_share_exceeded" in ln]
    assert len(lines) == 1 and "3 slide(s)" in lines[0] and "--keep-qc-failed" in lines[0]
    if command != "validate":
        assert set(pd.read_csv(tmp / f"{command}.csv")["n"]) == {117}
        assert main([command, *args, *out, *extra, "--keep-qc-failed"]) == 0
        assert "qc_failed_share_exceeded" not in capsys.readouterr().out
        assert set(pd.read_csv(tmp / f"{command}.csv")["n"]) == {120}


def test_associate_n_counts_only_unflagged(flagged_files):
    tmp, _, _ = flagged_files
    res = associate(join_features(tmp / "features.csv", tmp / "clinical.csv"),
                    levels=("pan-cancer",), attributes=("MSI",))
    assert set(res.summary["n"]) == {117}
