"""The partial tile table of a running translation, as an append-only journal.

Each line of ``.tiles.partial.jsonl`` is one tile row (or a failed tile's row) as a JSON object.
The tile loop appends the rows of every batch before it asks the canvas to write finished bands,
and fsyncs the journal when a band was written; so the journal always holds at least the rows of
every tile in a finished band, and a resume (which keeps only those) finds them all. Rows of
unfinished tiles that the journal also holds are dropped on resume, as before. Unlike the Parquet
snapshot it replaces (rewritten whole at every band: quadratic in the number of bands), writing it
costs only the new rows. A torn last line (a crash mid-write) is ignored on replay.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from virtime.channels import CHANNEL_NAMES

__all__ = ["FAILURE_COLUMN", "TileJournal", "failure_row", "read_journal", "tile_row"]

FAILURE_COLUMN = "failure_reason"  # marks a failed tile's row in the partial tile table


def _encode(row: dict[str, Any]) -> str:
    # Python floats round-trip exactly through repr; NaN as JSON's non-standard NaN (json reads it)
    return json.dumps(row, separators=(",", ":"))


def read_journal(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The rows of a journal, in order; stops at a line that does not parse (torn write)."""
    rows: list[dict[str, Any]] = []
    with open(path, "rb") as fh:
        for line in fh:
            if not line.endswith(b"\n"):
                break  # the last append did not finish
            try:
                row = json.loads(line)
            except ValueError:
                break
            rows.append(row)
    return rows


def tile_row(tile: int, grid: Any, pos: Any, mean: Any) -> dict[str, Any]:
    """A finished tile's row: its index, level-0 origin, tissue fraction and per channel the
    positive fraction and mean probability of its blended prediction."""
    row: dict[str, Any] = {
        "tile": tile,
        "x": int(grid.xy[tile, 0]),
        "y": int(grid.xy[tile, 1]),
        "tissue_fraction": float(grid.tissue_fraction[tile]),
    }
    for name, p, m in zip(CHANNEL_NAMES, pos, mean):
        row[f"{name}.positive_fraction"] = float(p)
        row[f"{name}.mean_probability"] = float(m)
    return row


def failure_row(failure: dict[str, Any]) -> dict[str, Any]:
    """A failed tile's row in the partial tile table (so an interrupted run's failures survive)."""
    return {"tile": failure["tile"], "x": failure["x"], "y": failure["y"],
            FAILURE_COLUMN: failure["reason"]}


class TileJournal:
    """Appends tile rows to ``path``; :meth:`start` rewrites it with the rows kept so far."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.written = 0  # rows of the run's list already in the file

    def start(self, rows: list[dict[str, Any]]) -> None:
        """A new journal holding ``rows`` (written atomically: a rerun never sees half)."""
        from virtime.io import atomic_path

        with atomic_path(self.path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
            fh.writelines(_encode(r) + "\n" for r in rows)
            fh.flush()
            os.fsync(fh.fileno())
        self.written = len(rows)

    def append(self, rows: list[dict[str, Any]], sync: bool = False) -> None:
        """Appends ``rows[self.written:]`` (flushed to the OS; fsynced with ``sync``)."""
        new = rows[self.written:]
        if not new and not sync:
            return
        with open(self.path, "a", encoding="utf-8") as fh:
            if new:
                fh.write("".join(_encode(r) + "\n" for r in new))
                fh.flush()
            if sync:
                os.fsync(fh.fileno())
        self.written = len(rows)
