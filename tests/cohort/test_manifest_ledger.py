"""Manifest validation and the ledger's persistence (snapshot + journal), without a cluster."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from virtime.cohort.ledger import JOURNAL_NAME, LEDGER_NAME, Ledger, ledger_summary, read_ledger
from virtime.cohort.manifest import read_manifest, validate_manifest
from virtime.errors import InputDataError


def test_manifest_resolves_paths_ids_and_mpp(tmp_path):
    (tmp_path / "a.svs").write_bytes(b"x" * 10)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.tiff").write_bytes(b"x" * 3)
    csv = tmp_path / "m.csv"
    csv.write_text("path,slide_id,patient_id,mpp\na.svs,,P1,\nsub/b.tiff,B,P2,0.25\n")
    m = read_manifest(csv)
    assert list(m["slide_id"]) == ["a", "B"]  # blank id -> file stem, as virtime translate
    assert list(m["path"]) == [str(tmp_path / "a.svs"), str(tmp_path / "sub" / "b.tiff")]
    assert np.isnan(m["mpp"][0]) and m["mpp"][1] == 0.25
    assert list(m["size_bytes"]) == [10, 3]
    m.to_parquet(tmp_path / "m.parquet")
    pd.testing.assert_frame_equal(read_manifest(tmp_path / "m.parquet"), m)


@pytest.mark.parametrize("rows, message", [
    ({"path": ["a.svs"]}, "missing column"),
    ({"path": ["a.svs", "b.svs"], "slide_id": ["x", "x"], "patient_id": ["1", "2"]}, "repeated"),
    ({"path": ["a.svs"], "slide_id": ["../up"], "patient_id": ["1"]}, "plain folder name"),
    ({"path": ["a.svs"], "patient_id": [""]}, "without patient_id"),
    ({"path": ["a.svs"], "patient_id": ["1"], "mpp": ["fast"]}, "not a number"),
    ({"path": ["a.svs"], "patient_id": ["1"], "mpp": [-0.5]}, "positive"),
    ({"path": ["a.svs", "b.svs"], "patient_id": ["1", "2"], "mpp": [0.25, float("inf")]},
     r"cohort\.csv: mpp inf um/px in row 2 is not a positive number"),
])
def test_manifest_errors_name_the_problem(rows, message):
    with pytest.raises(InputDataError, match=message):
        validate_manifest(pd.DataFrame(rows), name="cohort.csv")


def test_missing_manifest_file_is_named(tmp_path):
    with pytest.raises(InputDataError, match="nope.csv: manifest not found"):
        read_manifest(tmp_path / "nope.csv")


def _manifest(n):
    return validate_manifest(pd.DataFrame({"path": [f"/x/s{i}.svs" for i in range(n)],
                                           "patient_id": [f"p{i}" for i in range(n)]}))


def test_ledger_journal_survives_a_driver_crash(tmp_path):
    ledger = Ledger.open(tmp_path, _manifest(3), "run1", flush_seconds=3600)
    ledger.flush()
    ledger.record("s0", status="done", seconds=2.0, started=100.0, finished=102.0)
    ledger.record("s1", status="failed", reason="SlideFormatError: bad", attempts=1)
    # No flush: the driver "dies" here. The journal holds both results.
    assert (tmp_path / JOURNAL_NAME).is_file()
    with open(tmp_path / JOURNAL_NAME, "a") as fh:
        fh.write('{"slide_id": "s2", "stat')  # a torn last line
    back = read_ledger(tmp_path).set_index("slide_id")
    assert back.loc["s0", "status"] == "done" and back.loc["s0", "seconds"] == 2.0
    assert back.loc["s1", "reason"] == "SlideFormatError: bad"
    assert back.loc["s2", "status"] == "pending"


def test_ledger_replay_never_overrides_a_newer_snapshot(tmp_path):
    ledger = Ledger.open(tmp_path, _manifest(2), "run1", flush_seconds=3600)
    ledger.record("s0", status="failed", reason="old")
    stale = (tmp_path / JOURNAL_NAME).read_text()
    ledger.record("s0", status="done", reason="")
    ledger.flush()
    (tmp_path / JOURNAL_NAME).write_text(stale)  # crash between snapshot and journal removal
    assert read_ledger(tmp_path).set_index("slide_id").loc["s0", "status"] == "done"


def test_ledger_snapshot_is_parquet_with_all_statuses_and_summary(tmp_path):
    ledger = Ledger.open(tmp_path, _manifest(4), "run1", flush_seconds=0)
    ledger.record("s0", status="done", seconds=10.0, started=0.0, finished=10.0)
    ledger.record("s1", status="done", seconds=10.0, started=5.0, finished=15.0)
    ledger.record("s2", status="failed", reason="x", started=1.0, finished=2.0)
    ledger.records["s3"].update(status="skipped")
    ledger.flush()
    assert not (tmp_path / JOURNAL_NAME).exists()
    frame = pd.read_parquet(tmp_path / LEDGER_NAME)
    assert list(frame["status"]) == ["done", "done", "failed", "skipped"]
    s = ledger_summary(frame)
    assert (s["done"], s["failed"], s["skipped"], s["pending"]) == (2, 1, 1, 0)
    assert s["wall_seconds"] == 15.0 and s["slides_per_hour"] == pytest.approx(2 * 3600 / 15)
    json.dumps({k: v for k, v in s.items()})  # plain numbers, printable


def test_rerun_ledger_keeps_earlier_timings(tmp_path):
    first = Ledger.open(tmp_path, _manifest(2), "run1")
    first.record("s0", status="done", seconds=7.5, tiles_done=12)
    first.close()
    second = Ledger.open(tmp_path, _manifest(2), "run2")
    rec = second.records["s0"]
    assert rec["status"] == "pending" and rec["run_id"] == "run2"
    assert rec["seconds"] == 7.5 and rec["tiles_done"] == 12
