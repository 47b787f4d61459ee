"""Cohort workers prepare the next slide queued on them (open, tissue, first batches of tiles on
the device path) while the current one runs: same outputs as without, failures still recorded by
the ledger with their reason, nothing left behind."""

from __future__ import annotations

import dataclasses
import threading
import time
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import zarr

from virtime.cohort import run_cohort
from virtime.cohort.runner import CohortOptions
from virtime.cohort.worker import (
    SLIDE_KEY_PREFIX,
    CohortWorkerPlugin,
    prefetch_log,
    prepared_pending,
)

SIZES = {"p_big": (1024, 512), "p_mid": (768, 384), "p_small": (512, 384)}


@pytest.fixture(scope="module")
def slides(tmp_path_factory):
    from cohort_helpers import make_cohort_slides

    d = tmp_path_factory.mktemp("prefetch-slides")
    rows = make_cohort_slides(d, SIZES, 60, patient_id=lambda i: f"P{i}")
    (d / "junk.svs").write_text("not a slide at all")  # fails to open, in the prefetch too
    rows.append({"path": "junk.svs", "slide_id": "junk", "patient_id": "P8"})
    rows.append({"path": "missing.svs", "slide_id": "missing", "patient_id": "P9"})
    pd.DataFrame(rows).to_csv(d / "manifest.csv", index=False)
    return d


@pytest.fixture(scope="module")
def one_worker():
    """One worker process of one thread: every slide after the first is queued behind another."""
    from cohort_helpers import local_client

    with local_client(1) as client:
        yield client


@pytest.fixture(scope="module")
def device_config(cohort_config):
    """The device path on CPU tensors (torch), where the first batches are read ahead."""
    return dataclasses.replace(cohort_config, backend="torch", device="cpu", device_path=True,
                               features=False)


@pytest.fixture(scope="module")
def runs(slides, tiny_weights, device_config, one_worker, tmp_path_factory):
    """The same cohort with prefetching (default) and without (``prefetch_bytes=0``)."""
    out = {}
    for name, options in (("on", CohortOptions(show_progress=False)),
                          ("off", CohortOptions(show_progress=False, prefetch_bytes=0))):
        root = tmp_path_factory.mktemp(f"prefetch-{name}")
        before = len(one_worker.run(prefetch_log).popitem()[1])
        result = run_cohort(slides / "manifest.csv", tiny_weights, root, device_config,
                            options=options, client=one_worker)
        log = one_worker.run(prefetch_log).popitem()[1][before:]
        out[name] = (root, result, log)
    return out


def _canvas_levels(folder):
    group = zarr.open_group(str(folder / "mif.ome.zarr"), mode="r")
    paths = [d["path"] for d in group.attrs["multiscales"][0]["datasets"]]
    return [np.asarray(group[p][:]) for p in paths]


@pytest.mark.slow
def test_outputs_with_and_without_prefetch_are_identical(runs):
    (on, r_on, _), (off, r_off, _) = runs["on"], runs["off"]
    for sid in SIZES:
        a, b = _canvas_levels(on / sid), _canvas_levels(off / sid)
        assert len(a) == len(b)
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)  # byte-equal pyramid
        pd.testing.assert_frame_equal(pd.read_parquet(on / sid / "tiles.parquet"),
                                      pd.read_parquet(off / sid / "tiles.parquet"))
        np.testing.assert_array_equal(np.load(on / sid / "tissue_mask.npy"),
                                      np.load(off / sid / "tissue_mask.npy"))
    for result in (r_on, r_off):
        ledger = result.ledger.set_index("slide_id")
        assert sorted(ledger.index[ledger.status == "done"]) == sorted(SIZES)


@pytest.mark.slow
def test_queued_slides_are_prepared_and_their_first_batches_read_ahead(runs):
    import json

    root, result, log = runs["on"]
    ledger = result.ledger.set_index("slide_id")
    first = "p_big"  # largest first: it starts at once, nothing to overlap
    queued = [s for s in SIZES if s != first]
    assert ledger.loc[queued, "prepared"].all()
    assert (ledger.loc[queued, "prefetch_seconds"] > 0).all()
    done = {e["slide_id"]: e for e in log if e["status"] == "prepared"}
    assert set(queued) <= set(done) and all(done[s]["read_ahead"] > 0 for s in queued)
    for sid in queued:  # the loop took the read-ahead batches (they matched its first batches)
        timings = json.loads((root / sid / "summary.json").read_text())["timings_seconds"]
        assert timings["read_ahead_s"] > 0
    # Without prefetching nothing was prepared.
    _, r_off, log_off = runs["off"]
    assert not r_off.ledger["prepared"].any() and log_off == []


@pytest.mark.slow
def test_a_slide_that_fails_to_open_ahead_is_recorded_failed_with_its_error(runs):
    _, result, log = runs["on"]
    ledger = result.ledger.set_index("slide_id")
    failed_ahead = {e["slide_id"]: e["error"] for e in log if e["status"] == "failed"}
    # Tried ahead and failed there (a bad slide whose task starts before its turn on the
    # prefetch thread is simply opened by the task: which ones depends on timing).
    assert failed_ahead and set(failed_ahead) <= {"junk", "missing"}, log
    for sid in ("junk", "missing"):
        assert ledger.loc[sid, "status"] == "failed" and not ledger.loc[sid, "prepared"]
        assert ledger.loc[sid, "attempts"] == 1  # deterministic: not retried
        assert f"{sid}.svs" in ledger.loc[sid, "reason"]
    for sid, error in failed_ahead.items():  # the task met and recorded the same error
        assert ledger.loc[sid, "reason"].split(":")[0] == error.split(":")[0]


@pytest.mark.slow
def test_nothing_is_left_prepared_or_running_after_a_run(runs, one_worker):
    assert all(v == [] for v in one_worker.run(prepared_pending).values())

    def helper_threads():
        return [t.name for t in threading.enumerate() if t.name.startswith("virtime-prefetch-")]

    assert all(v == [] for v in one_worker.run(helper_threads).values())


class _FakeWorker:
    """A worker's task table as the plugin reads it (``state.tasks[key].run_spec.args``)."""

    def __init__(self) -> None:
        self.state = SimpleNamespace(tasks={})

    def queue(self, key, args) -> None:
        self.state.tasks[key] = SimpleNamespace(run_spec=SimpleNamespace(args=args))


def test_plugin_prepares_in_order_and_teardown_stops_its_thread(small_slide, tmp_path,
                                                               fast_config):
    from virtime.cohort import worker as w

    plugin = CohortWorkerPlugin()
    fake = _FakeWorker()
    plugin.setup(fake)
    keys = []
    for i, batches in enumerate((0, 2)):  # batches=2 waits for an engine that never comes
        key = (SLIDE_KEY_PREFIX, "run-x", f"s{i}", str(small_slide))
        fake.queue(key, (str(small_slide), f"s{i}", str(tmp_path), None, fast_config, "run-x",
                         0, 1 << 20, batches))
        plugin.transition(key, "waiting", "ready")
        keys.append(key)
    assert prepared_pending() == ["s0", "s1"]
    w._PREPARED[("run-x", "s0")].future.result(timeout=60)  # s0 waited in the queue meanwhile
    ahead = w._claim("run-x", "s0")  # what the task does first
    prepared = w._prepared(ahead, "s0")
    assert prepared is not None and prepared.fits(small_slide, None) and prepared.read_ahead == 0
    deadline = time.monotonic() + 30
    while not any(t.name.startswith("virtime-prefetch") for t in threading.enumerate()):
        assert time.monotonic() < deadline
    plugin.teardown(fake)  # s1 is still waiting for its engine: dropped, the thread stops
    assert prepared_pending() == []
    assert not any(t.name.startswith("virtime-prefetch") for t in threading.enumerate())
    plugin.transition(keys[1], "waiting", "released")  # after teardown: harmless
