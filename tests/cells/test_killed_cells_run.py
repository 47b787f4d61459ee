"""A ``--cells`` run killed mid-slide leaves the cell table's temporary file behind; the rerun
that finishes the slide removes it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from virtime.cli import main


@pytest.mark.slow
def test_rerun_after_a_killed_cells_run_leaves_no_partial_file(tiny_weights, tmp_path):
    """Old code: ``.cells.parquet.<pid>.*.partial`` of the killed run stayed in the folder."""
    import pyarrow.parquet as pq

    from virtime.simulate.slides import make_slide

    slide = make_slide(tmp_path / "s.svs", 1024, 768, mpp=0.5, seed=8)
    out = tmp_path / "out"
    flags = ["-o", str(out), "--weights", str(tiny_weights), "-q", "--backend", "onnxruntime",
             "--tile-size", "128", "--cells", "--no-features"]
    slow = ["--threads", "1", "--batch-size", "1"]  # time to see the table open and kill
    proc = subprocess.Popen([sys.executable, "-m", "virtime.cli", "translate", str(slide),
                             *flags, *slow], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    folder = out / "s"
    deadline = time.monotonic() + 120
    try:
        while not list(folder.glob(".cells.parquet.*.partial")):  # the cell table is open
            assert proc.poll() is None, "the run ended before its cell table was seen"
            assert time.monotonic() < deadline
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)  # as a scheduler's hard kill or an OOM kill does
    finally:
        proc.wait(timeout=60)
    left = list(folder.glob(".cells.parquet.*.partial"))
    assert left and str(proc.pid) in left[0].name  # what the killed run left
    assert not (folder / "summary.json").exists()
    assert main(["translate", str(slide), *flags]) == 0
    assert not [p.name for p in folder.iterdir() if p.name.endswith(".partial")]
    pq.read_table(folder / "cells.parquet")  # the rerun's table, whole


def test_only_temporary_files_of_atomic_writes_are_removed(tmp_path):
    from virtime.io import SlideFolder

    keep = [".tiles.partial.jsonl", ".tiles.partial.parquet", "tiles.parquet", "notes.partial",
            ".virtime.lock"]
    drop = [".cells.parquet.4242.k3j_x9.partial", ".summary.json.17.a1b2c3.partial"]
    for name in keep + drop:
        (tmp_path / name).write_bytes(b"x")
    removed = SlideFolder(tmp_path).remove_stale_partials()
    assert sorted(p.name for p in removed) == sorted(drop)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep)
