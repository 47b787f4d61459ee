"""The tile loop's bookkeeping (translation/loop.py) over a scripted batch step.

The loop is the same for the host and the device step; these tests drive it with a step whose
results are known, so the rows, the journal, the band flushes and the progress events can be
written out here by hand and compared.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from virtime.channels import CHANNEL_NAMES
from virtime.translation.config import TranslateConfig
from virtime.translation.journal import FAILURE_COLUMN
from virtime.translation.loop import run_tile_loop

C = len(CHANNEL_NAMES)
TILE = 10  # model pixels per tile (the band flushes follow the tiles' y)


@dataclass
class _Failure:
    tile_index: int
    x: int
    y: int
    reason: str


@dataclass
class _Batch:
    tile_index: np.ndarray
    failures: list[_Failure] = field(default_factory=list)
    read_seconds: float = 0.25
    normalize_seconds: float = 0.5
    pack_seconds: float = 1.0

    def __len__(self) -> int:
        return len(self.tile_index)


class _Step:
    """Known statistics per tile: positive fraction tile/100, mean probability tile/1000."""

    timeline = None

    def __init__(self, batches: list[_Batch], depth: int, log: list[Any]) -> None:
        self._batches, self.depth, self.log = batches, depth, log

    def batches(self):
        for b in self._batches:
            self.log.append(("read", [int(t) for t in b.tile_index]))
            yield b

    def submit(self, batch: _Batch) -> list[int]:
        self.log.append(("submit", [int(t) for t in batch.tile_index]))
        return [int(t) for t in batch.tile_index]

    def collect(self, batch: _Batch, ticket: list[int]) -> tuple[np.ndarray, np.ndarray]:
        self.log.append(("collect", ticket))
        t = np.asarray(ticket, dtype=np.float64)[:, None]
        return np.repeat(t / 100, C, axis=1), np.repeat(t / 1000, C, axis=1)

    def close(self, wall: float) -> None:
        self.log.append(("close",))


class _Canvas:
    def __init__(self, log: list[Any]) -> None:
        self.log, self.factor, self.shape_yx = log, 1, (60, 10)

    def flush_until(self, y: int) -> int:
        self.log.append(("flush", y))
        return 1 if y % 20 == 0 else 0  # a band written every other call


class _Journal:
    def __init__(self, log: list[Any]) -> None:
        self.log = log

    def append(self, rows: list[dict[str, Any]], sync: bool = False) -> None:
        self.log.append(("journal", len(rows), sync))


def _run(batches: list[_Batch], depth: int) -> tuple[Any, list[Any], list[Any], list[dict]]:
    log: list[Any] = []
    events: list[dict] = []
    n = 6
    todo = np.arange(n)
    run = SimpleNamespace(
        todo=todo, slide_id="s", rows=[], cells=None, embedder=None,
        timings={"read_cpu": 0.0, "normalize_cpu": 0.0, "pack_cpu": 0.0, "engine": 0.0,
                 "postprocess": 0.0, "write": 0.0},
        grid=SimpleNamespace(xy=np.stack([todo * 7, todo * 9], axis=1),
                             tissue_fraction=np.linspace(0.5, 1.0, n)),
        tile_xy_model=np.stack([np.zeros(n, int), todo * TILE], axis=1),
        canvas=_Canvas(log), journal=_Journal(log),
        jlog=SimpleNamespace(emit=lambda **e: events.append(e)))
    cfg = TranslateConfig(show_progress=False)
    rows, failures = run_tile_loop(run, _Step(batches, depth, log), cfg)
    return run, log, events, failures


def _batches() -> list[_Batch]:
    return [_Batch(np.array([0, 1])),
            _Batch(np.array([3]), [_Failure(2, 14, 18, "unreadable")]),
            _Batch(np.array([], dtype=np.int64), [_Failure(4, 28, 36, "bad"),
                                                   _Failure(5, 35, 45, "bad")])]


def _tile_row(t: int) -> dict[str, Any]:
    row = {"tile": t, "x": 7 * t, "y": 9 * t, "tissue_fraction": 0.5 + 0.1 * t}
    for name in CHANNEL_NAMES:
        row[f"{name}.positive_fraction"] = t / 100
        row[f"{name}.mean_probability"] = t / 1000
    return row


def _fail_row(t: int, x: int, y: int, reason: str) -> dict[str, Any]:
    return {"tile": t, "x": x, "y": y, FAILURE_COLUMN: reason}


def test_one_batch_at_a_time_keeps_the_books_in_order():
    run, log, events, failures = _run(_batches(), depth=1)
    expected_rows = [_tile_row(0), _tile_row(1), _fail_row(2, 14, 18, "unreadable"),
                     _tile_row(3), _fail_row(4, 28, 36, "bad"), _fail_row(5, 35, 45, "bad")]
    assert len(run.rows) == len(expected_rows)
    for got, want in zip(run.rows, expected_rows):
        assert got.keys() == want.keys()
        assert got == pytest.approx(want)
    assert failures == [{"tile": 2, "x": 14, "y": 18, "reason": "unreadable"},
                        {"tile": 4, "x": 28, "y": 36, "reason": "bad"},
                        {"tile": 5, "x": 35, "y": 45, "reason": "bad"}]
    # Per batch: the rows journaled, then the bands above the next tile's row flushed (the
    # canvas' end after the last tile); an fsynced journal after a flush that wrote a band.
    assert log == [
        ("read", [0, 1]), ("submit", [0, 1]), ("collect", [0, 1]),
        ("journal", 2, False), ("flush", 20), ("journal", 2, True),
        ("read", [3]), ("submit", [3]), ("collect", [3]),
        ("journal", 4, False), ("flush", 40), ("journal", 4, True),
        ("read", []),  # only failures: nothing submitted
        ("journal", 6, False), ("flush", 60), ("journal", 6, True),
        ("close",)]
    assert [e["tiles_done"] for e in events] == [2, 4, 6]
    assert all(e["event"] == "progress" and e["tiles_total"] == 6 for e in events)
    t = run.timings
    assert (t["read_cpu"], t["normalize_cpu"], t["pack_cpu"]) == (0.75, 1.5, 3.0)


def test_two_batches_in_flight_give_the_same_books():
    run1, _, events1, failures1 = _run(_batches(), depth=1)
    run2, log, events2, failures2 = _run(_batches(), depth=2)
    # Batch k is collected only once batch k+1 was submitted; nothing is lost or doubled.
    assert log.index(("submit", [3])) < log.index(("collect", [0, 1]))
    assert sorted(r["tile"] for r in run2.rows) == sorted(r["tile"] for r in run1.rows)
    key = {r["tile"]: r for r in run1.rows}
    assert all(r == key[r["tile"]] for r in run2.rows)
    assert failures2 == failures1
    assert [e["tiles_done"] for e in events2] == [e["tiles_done"] for e in events1]
    assert [x for x in log if x[0] == "flush"] == [("flush", 20), ("flush", 40), ("flush", 60)]


def test_nothing_to_do_closes_the_step_and_reads_nothing():
    log: list[Any] = []
    run = SimpleNamespace(todo=np.arange(0), slide_id="s", rows=[], timings={})
    rows, failures = run_tile_loop(run, _Step([_Batch(np.array([0]))], 1, log),
                                   TranslateConfig(show_progress=False))
    assert (rows, failures, log) == ([], [], [("close",)])
