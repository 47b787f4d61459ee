"""Stopping a run: SIGTERM (a batch scheduler's time limit) as Ctrl-C, each in one line.

Real processes and real signals: the run is started with ``python -m virtime.cli`` and signalled
once its JSON log (or its output folder) shows it is working.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from slow_engine import slow_engine_env
from virtime.translation.lock import LOCK_NAME

# Seconds each engine batch sleeps in the signalled processes: their runs last long enough to be
# stopped mid-slide however fast the machine (the tiny model alone finishes a slide in ~1 s).
BATCH_DELAY = 0.1


def _wait_for(condition, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    start = time.monotonic()
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"the run ended before it was signalled: {proc.communicate()}")
        if time.monotonic() - start > timeout:
            proc.kill()
            pytest.fail("the run never started")
        time.sleep(0.1)


def _sigint_as_from_a_terminal() -> None:
    """In the child, before exec: SIGINT back to its default, as a terminal's foreground job has
    it. A test session started as a background job inherits SIGINT ignored, and Python keeps an
    ignored SIGINT ignored, so Ctrl-C would not reach the run under test."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture(scope="module")
def long_slide(tmp_path_factory) -> Path:
    """Enough tiles (144 at 128 px) that the tiny model is still at work when signalled."""
    from virtime.simulate.slides import make_slide

    return make_slide(tmp_path_factory.mktemp("long") / "long.svs", 1536, 1536, mpp=0.5, seed=5)


@pytest.mark.slow
def test_sigterm_stops_translate_like_ctrl_c(long_slide, tiny_weights, tmp_path):
    log = tmp_path / "events.jsonl"
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "virtime.cli", "translate", str(long_slide), "-o", str(out),
         "--weights", str(tiny_weights), "-q", "--backend", "onnxruntime", "--tile-size", "128",
         "--threads", "1", "--batch-size", "2", "--no-features", "--log-json", str(log)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=slow_engine_env(tmp_path / "site", BATCH_DELAY))
    _wait_for(lambda: log.is_file() and '"start"' in log.read_text(), proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert err.strip().splitlines() == ["virtime translate: interrupted (SIGTERM)"]
    events = [json.loads(line)["event"] for line in log.read_text().splitlines()]
    assert "interrupted" in events and events[-1] == "run_interrupted", events
    folder = out / "long"
    assert not (folder / LOCK_NAME).exists()  # released: a rerun needs no --wait or cleanup
    assert not (folder / "summary.json").exists()  # and it is not taken for finished


@pytest.mark.slow
def test_ctrl_c_on_cohort_run_is_one_line(long_slide, small_slide, tiny_weights, tmp_path):
    """Ctrl-C reaches the whole process group: the driver and its local cluster's workers."""
    manifest = tmp_path / "m.csv"
    pd.DataFrame({"path": [str(long_slide), str(small_slide)], "slide_id": ["long", "small"],
                  "patient_id": ["P1", "P2"]}).to_csv(manifest, index=False)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "virtime.cli", "cohort", "run", str(manifest), "-o", str(out),
         "--weights", str(tiny_weights), "-q", "--no-dashboard", "--workers", "1",
         "--backend", "onnxruntime", "--tile-size", "128", "--threads", "1", "--batch-size", "2",
         "--no-features"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        env=slow_engine_env(tmp_path / "site", BATCH_DELAY), preexec_fn=_sigint_as_from_a_terminal)
    _wait_for(lambda: (out / "long" / "mif.ome.zarr").exists(), proc, timeout=180)
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal does
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 128 + signal.SIGINT, err
    assert err.strip().splitlines() == ["virtime cohort: interrupted"], err
