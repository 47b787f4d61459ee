"""One cohort run at a time per output root: a second `cohort run` on the same output stops with
one line and a non-zero exit while the first holds it, and the first run's results stay whole."""

from __future__ import annotations

import os

import pandas as pd
import pytest

from virtime.cli import main
from virtime.cohort import read_ledger, run_cohort
from virtime.cohort.lock import COHORT_LOCK_NAME, cohort_lock
from virtime.cohort.runner import CohortOptions
from virtime.errors import OutputLockedError

QUIET = CohortOptions(show_progress=False, quiet=True)


@pytest.fixture
def manifest(tmp_path):
    from cohort_helpers import make_cohort_slides

    rows = make_cohort_slides(tmp_path, {"a": (512, 384), "b": (384, 256)}, 50,
                              patient_id=lambda i: f"P{i}")
    pd.DataFrame(rows).to_csv(tmp_path / "manifest.csv", index=False)
    return tmp_path / "manifest.csv"


def _refused(out, capsys, argv):
    """The CLI's exit code and its one stderr line."""
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return code, err[0]


def test_cohort_run_on_a_locked_output_is_one_line_and_touches_nothing(manifest, tiny_weights,
                                                                      tmp_path, capsys):
    out = tmp_path / "OUT"
    out.mkdir()
    with cohort_lock(out):  # another cohort run (this process) holds the output
        code, line = _refused(out, capsys, ["cohort", "run", str(manifest), "-o", str(out),
                                            "--weights", str(tiny_weights), "-q", "--workers",
                                            "1", "--no-dashboard"])
        assert (out / COHORT_LOCK_NAME).is_file()
    assert code == 2 and line.startswith("virtime cohort: error: ")
    assert "another virtime cohort run" in line and f"pid {os.getpid()}" in line
    assert str(out / COHORT_LOCK_NAME) in line
    assert sorted(p.name for p in out.iterdir()) == []  # no ledger, no slide folder, no lock


@pytest.mark.slow
def test_two_cohort_runs_on_one_output(manifest, tiny_weights, cohort_config, tmp_path, capsys):
    """The second run starts while the first holds the output, just before it submits its
    slides; it is refused (API and CLI) and the first run finishes every slide."""
    from distributed import Client, LocalCluster

    out = tmp_path / "OUT"
    seen = {}

    def second_run(client):
        with pytest.raises(OutputLockedError, match="another virtime cohort run") as refused:
            run_cohort(manifest, tiny_weights, out, cohort_config, options=QUIET, client=client)
        seen["api"] = str(refused.value)
        seen["cli"] = _refused(out, capsys, ["cohort", "run", str(manifest), "-o", str(out),
                                             "--weights", str(tiny_weights), "-q", "--workers",
                                             "1", "--no-dashboard"])

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        first = run_cohort(manifest, tiny_weights, out, cohort_config, options=QUIET,
                           client=client, on_client=second_run)
    assert "\n" not in seen["api"] and seen["cli"][0] == 2
    assert str(out / COHORT_LOCK_NAME) in seen["cli"][1]
    ledger = read_ledger(out).set_index("slide_id")
    assert ledger["status"].to_dict() == {"a": "done", "b": "done"}
    pd.testing.assert_frame_equal(read_ledger(out), first.ledger)
    table = pd.read_parquet(first.features_path)
    assert sorted(table["slide_id"]) == ["a", "b"]
    assert not (out / COHORT_LOCK_NAME).exists()  # released at the end
