"""Writing the partial tile table during a translation: the append-only journal (#16) against the
Parquet snapshot it replaced (the whole table rewritten atomically at every finished band).

Run: ``python -m pytest benchmarks/bench_partial_journal.py --benchmark-enable -s`` (or
``python benchmarks/bench_partial_journal.py``). A slide of ``BANDS`` canvas bands of
``TILES_PER_BAND`` tiles (the real row layout: tile, x, y, tissue_fraction and two statistics per
channel) is "translated": after each band the rows so far are saved, the old way (pyarrow table
from the rows, atomic Parquet write) and the new way (JSON lines appended, fsynced). Both replay
to the same rows (checked), and the ratio of their total write times is printed.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

BANDS = 60
TILES_PER_BAND = 40


def _rows(n: int, seed: int = 0) -> list[dict]:
    from virtime.channels import CHANNEL_NAMES

    rng = np.random.default_rng(seed)
    out = []
    for t in range(n):
        row = {"tile": t, "x": int(t % 97) * 512, "y": int(t // 97) * 512,
               "tissue_fraction": float(rng.random())}
        for name in CHANNEL_NAMES:
            row[f"{name}.positive_fraction"] = float(rng.random())
            row[f"{name}.mean_probability"] = float(rng.random())
        out.append(row)
    return out


def _old(folder: Path, rows: list[dict]) -> float:
    from virtime.io import NO_MODEL, write_parquet

    t = 0.0
    for b in range(1, BANDS + 1):
        t0 = time.perf_counter()
        write_parquet(pd.DataFrame(rows[: b * TILES_PER_BAND]), folder / "p.parquet",
                      model_hash=NO_MODEL)
        t += time.perf_counter() - t0
    return t


def _new(folder: Path, rows: list[dict]) -> float:
    from virtime.translation.journal import TileJournal

    journal = TileJournal(folder / "p.jsonl")
    t0 = time.perf_counter()
    journal.start([])
    t = time.perf_counter() - t0
    for b in range(1, BANDS + 1):
        t0 = time.perf_counter()
        journal.append(rows[: b * TILES_PER_BAND], sync=True)
        t += time.perf_counter() - t0
    return t


def measure(repeats: int = 3) -> dict[str, float]:
    from virtime.translation.journal import read_journal

    rows = _rows(BANDS * TILES_PER_BAND)
    old, new = [], []
    with tempfile.TemporaryDirectory() as d:
        for _ in range(repeats):  # interleaved, so machine load falls on both alike
            old.append(_old(Path(d), rows))
            new.append(_new(Path(d), rows))
        replay_old = pd.read_parquet(Path(d) / "p.parquet").to_dict("records")
        replay_new = read_journal(Path(d) / "p.jsonl")
    assert replay_new == rows and replay_old == rows  # the same rows, exactly
    res = {"snapshot_s": float(np.median(old)), "journal_s": float(np.median(new))}
    res["ratio"] = res["snapshot_s"] / res["journal_s"]
    return res


def test_journal_against_snapshot() -> None:
    res = measure()
    print(f"\npartial tile table, {BANDS} bands x {TILES_PER_BAND} tiles: Parquet snapshot "
          f"{res['snapshot_s']:.3f} s, journal {res['journal_s']:.3f} s: {res['ratio']:.1f}x")
    assert res["ratio"] > 1.0


if __name__ == "__main__":
    test_journal_against_snapshot()
