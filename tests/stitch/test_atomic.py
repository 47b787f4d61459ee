"""Atomic writes and the run manifest."""

from __future__ import annotations

import json

import pytest

from virtime.errors import InputDataError, InvalidArgumentError
from virtime.io import RunManifest, atomic_path, atomic_write_bytes, atomic_write_json


def test_atomic_write_replaces_and_leaves_no_temporaries(tmp_path) -> None:
    target = tmp_path / "a.json"
    atomic_write_json(target, {"b": 1})
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_failed_write_keeps_the_old_file(tmp_path) -> None:
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("writer crashed")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_manifest_round_trip_and_resume_rules(tmp_path) -> None:
    path = tmp_path / "m.json"
    m = RunManifest.create(path, {"mpp": 2.0, "shape": (3, 4)})
    m.mark_complete("bands", 0)
    m.mark_complete("bands", 1)
    m.mark_complete("bands", 1)
    again = RunManifest.open(path, {"mpp": 2.0, "shape": [3, 4]})
    assert again.completed("bands") == [0, 1] and again.is_complete("bands", 1)
    assert not again.finished
    again.mark_finished()
    assert json.loads(path.read_text())["finished"] is True
    with pytest.raises(InvalidArgumentError, match="'mpp'.*--force"):
        RunManifest.open(path, {"mpp": 1.0, "shape": [3, 4]})
    fresh = RunManifest.open(path, {"mpp": 1.0}, resume=False)
    assert fresh.completed("bands") == [] and not RunManifest.load(path).finished


def test_corrupt_manifest_is_a_clear_error(tmp_path) -> None:
    path = tmp_path / "m.json"
    path.write_text("{not json")
    with pytest.raises(InputDataError, match="m.json"):
        RunManifest.load(path)
    path.write_text("[]")
    with pytest.raises(InputDataError, match="not a virtime run manifest"):
        RunManifest.load(path)


def test_atomic_files_get_the_permissions_open_would_give(tmp_path) -> None:
    """mkstemp makes 0600 files; a report or table written atomically must not stay private."""
    import os
    import stat

    from virtime.report import ReportSection, build_report
    from virtime.report.html import TextBlock

    mask = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "a.bin", b"x")
        report = build_report([ReportSection("S", [TextBlock("hello")])], tmp_path / "r.html")
        plain = tmp_path / "plain"
        plain.write_bytes(b"x")  # reference: what a plain open() creates under this umask
    finally:
        os.umask(mask)
    want = stat.S_IMODE(plain.stat().st_mode)
    assert want == 0o644
    for path in (tmp_path / "a.bin", report):
        assert stat.S_IMODE(path.stat().st_mode) == want, path
