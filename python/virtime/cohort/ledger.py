"""The run ledger: one row per slide saying done / failed (why) / skipped / pending, with timings.

State lives in ``OUT/cohort_ledger.parquet`` (rewritten atomically through :mod:`virtime.io`) and
a journal ``OUT/.cohort_ledger.jsonl`` that gets one fsync'd JSON line per result as it arrives.
The Parquet snapshot is refreshed every few seconds and at the end; reading replays the journal
over the snapshot (a record applies only if newer than the row it replaces), so an interrupted
driver loses no result and replaying twice is harmless.

The slide folders stay the truth about what finished: a rerun marks a slide whose outputs are
complete as ``skipped`` whatever the ledger said, so nothing finished is recomputed.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "JOURNAL_NAME",
    "LEDGER_COLUMNS",
    "LEDGER_NAME",
    "STATUSES",
    "Ledger",
    "ledger_summary",
    "read_ledger",
]

log = logging.getLogger(__name__)

LEDGER_NAME = "cohort_ledger.parquet"
JOURNAL_NAME = ".cohort_ledger.jsonl"
#: ``pending``: not finished in this run (yet); ``done``: translated in this run; ``skipped``:
#: already complete on disk; ``failed``: gave up, ``reason`` says why.
STATUSES = ("pending", "done", "skipped", "failed")
LEDGER_COLUMNS = (
    "slide_id", "patient_id", "path", "mpp", "size_bytes", "status", "reason", "attempts",
    "seconds", "translate_seconds", "tiles_done", "tiles_failed", "worker", "engine_cached",
    "started", "finished", "run_id", "updated", "prepared", "prefetch_seconds",
)
_DEFAULTS: dict[str, Any] = {
    "status": "pending", "reason": "", "attempts": 0, "seconds": np.nan,
    "translate_seconds": np.nan, "tiles_done": -1, "tiles_failed": -1, "worker": "",
    "engine_cached": False, "started": np.nan, "finished": np.nan, "run_id": "", "updated": 0.0,
    # prepared: opened (and its first batches read) ahead by the worker, prefetch_seconds it took
    "prepared": False, "prefetch_seconds": np.nan,
}
_DTYPES = {"attempts": "int64", "tiles_done": "int64", "tiles_failed": "int64", "mpp": "float64",
           "size_bytes": "int64", "seconds": "float64", "translate_seconds": "float64",
           "started": "float64", "finished": "float64", "updated": "float64",
           "engine_cached": "bool", "prepared": "bool", "prefetch_seconds": "float64"}


class Ledger:
    """Mutable per-slide records of a cohort run, persisted as results arrive.

    Parameters
    ----------
    out_root
        The cohort's output root (the ledger files live there).
    records
        ``slide_id -> record`` (dicts with :data:`LEDGER_COLUMNS`), in manifest order.
    flush_seconds
        Least time between Parquet snapshots (the journal is written on every record).
    """

    def __init__(self, out_root: str | os.PathLike[str], records: dict[str, dict[str, Any]],
                 *, flush_seconds: float = 5.0) -> None:
        self.out_root = Path(out_root)
        self.records = records
        self.flush_seconds = float(flush_seconds)
        self._last_flush = time.monotonic()
        self._flush_cost = 0.0

    @classmethod
    def open(cls, out_root: str | os.PathLike[str], manifest: pd.DataFrame, run_id: str,
             *, flush_seconds: float = 5.0) -> Ledger:
        """The ledger of a new run over ``manifest``, carrying over earlier runs' records.

        Every slide starts ``pending`` for this run except the runner then marks complete ones
        ``skipped``; the previous record's timings are kept for those.
        """
        previous = read_ledger(out_root) if _has_ledger(out_root) else None
        prev = {} if previous is None else {r["slide_id"]: r for r in previous.to_dict("records")}
        records: dict[str, dict[str, Any]] = {}
        for row in manifest.to_dict("records"):
            rec = {**_DEFAULTS, **{k: v for k, v in prev.get(row["slide_id"], {}).items()
                                   if k in _DEFAULTS}}
            rec.update({k: row[k] for k in ("slide_id", "patient_id", "path", "mpp", "size_bytes")})
            rec.update(status="pending", reason="", attempts=0, run_id=run_id)
            records[row["slide_id"]] = rec
        return cls(out_root, records, flush_seconds=flush_seconds)

    def record(self, slide_id: str, /, **fields: Any) -> None:
        """Updates one slide's record; journals it at once and snapshots when due."""
        rec = self.records[slide_id]
        rec.update({k: v for k, v in fields.items() if k in LEDGER_COLUMNS})
        rec["updated"] = time.time()
        self._append_journal(rec)
        if time.monotonic() - self._last_flush >= max(self.flush_seconds, 20 * self._flush_cost):
            self.flush()

    def mark_many(self, slide_ids: Iterable[str], **fields: Any) -> None:
        """Updates several records in memory only (start-of-run bookkeeping); call flush()."""
        now = time.time()
        for sid in slide_ids:
            self.records[sid].update(fields)
            self.records[sid]["updated"] = now

    def frame(self) -> pd.DataFrame:
        """The ledger as a DataFrame with :data:`LEDGER_COLUMNS`."""
        return _to_frame(list(self.records.values()))

    def flush(self) -> Path:
        """Writes the Parquet snapshot atomically, then empties the journal it supersedes."""
        t0 = time.monotonic()
        path = self.out_root / LEDGER_NAME
        _write_ledger_table(self.frame(), path)
        (self.out_root / JOURNAL_NAME).unlink(missing_ok=True)
        self._last_flush = time.monotonic()
        self._flush_cost = self._last_flush - t0
        return path

    def close(self) -> None:
        """Final snapshot."""
        self.flush()

    def _append_journal(self, rec: dict[str, Any]) -> None:
        # Opened per record: nothing stays open if the driver dies, and O_APPEND keeps lines whole.
        with open(self.out_root / JOURNAL_NAME, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(_jsonable(rec)) + "\n")
            fh.flush()
            os.fsync(fh.fileno())


def _has_ledger(out_root: str | os.PathLike[str]) -> bool:
    root = Path(out_root)
    return (root / LEDGER_NAME).is_file() or (root / JOURNAL_NAME).is_file()


def read_ledger(out_root: str | os.PathLike[str]) -> pd.DataFrame:
    """The ledger of ``out_root``: the Parquet snapshot with newer journal records applied.

    Raises InputDataError (one line naming the folder) when ``out_root`` is not a cohort output
    folder (missing, not a folder, no cohort ran there) or its ledger cannot be read.
    """
    from virtime.errors import InputDataError

    root = Path(out_root)
    if not root.is_dir():
        raise InputDataError(f"{root}: not a cohort output folder "
                             f"({'not found' if not root.exists() else 'not a directory'})")
    if not _has_ledger(root):
        raise InputDataError(f"{root}: not a cohort output folder (no cohort ledger, "
                             f"{LEDGER_NAME}; run `virtime cohort run` first)")
    try:
        return _read_ledger(root)
    except Exception as exc:  # a damaged ledger: pyarrow/json errors vary
        raise InputDataError(f"{root}: cannot read the cohort ledger: "
                             f"{' '.join(str(exc).split())[:200]}") from exc


def _read_ledger(root: Path) -> pd.DataFrame:
    rows: dict[str, dict[str, Any]] = {}
    if (root / LEDGER_NAME).is_file():
        rows = {r["slide_id"]: r for r in pd.read_parquet(root / LEDGER_NAME).to_dict("records")}
    journal = root / JOURNAL_NAME
    if journal.is_file():
        for line in journal.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:  # a torn last line from a killed driver
                continue
            old = rows.get(rec.get("slide_id"))
            if old is None or float(rec.get("updated", 0)) >= float(old.get("updated", 0)):
                rows[rec["slide_id"]] = rec
    return _to_frame(list(rows.values()))


def ledger_summary(ledger: pd.DataFrame) -> dict[str, Any]:
    """Counts per status, throughput of the last run (slides/hour) and wall time."""
    counts = {s: int((ledger["status"] == s).sum()) for s in STATUSES}
    ran = ledger[ledger["status"].isin(["done", "failed"]) & ledger["finished"].notna()]
    done = ledger[ledger["status"] == "done"]
    wall = float(ran["finished"].max() - ran["started"].min()) if len(ran) else 0.0
    return {
        "slides": len(ledger),
        **counts,
        "wall_seconds": wall,
        "slides_per_hour": 3600.0 * len(done) / wall if wall > 0 else float("nan"),
        "mean_slide_seconds": float(done["seconds"].mean()) if len(done) else float("nan"),
    }


def _to_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(records, columns=list(LEDGER_COLUMNS))
    for col, dtype in _DTYPES.items():
        if dtype == "bool":
            frame[col] = frame[col].map(lambda v: False if _missing(v) else bool(v))
            continue
        values = pd.to_numeric(frame[col], errors="coerce").astype("float64")
        frame[col] = values.fillna(_DEFAULTS.get(col, np.nan)).astype(dtype)
    for col in ("slide_id", "patient_id", "path", "status", "reason", "worker", "run_id"):
        frame[col] = frame[col].map(lambda v: "" if _missing(v) else str(v)).astype(object)
    return frame


def _missing(value: Any) -> bool:
    """None or a float NaN (what pandas leaves in empty cells)."""
    return value is None or (isinstance(value, float) and np.isnan(value))


def _jsonable(rec: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in rec.items():
        if isinstance(v, (np.integer, np.floating, np.bool_)):
            v = v.item()
        if isinstance(v, float) and not np.isfinite(v):
            v = None
        out[k] = v
    return out


def _write_ledger_table(frame: pd.DataFrame, path: Path) -> None:
    """Through virtime.io.write_parquet, stamped with the model hash(es) the ledger names."""
    from virtime.io import NO_MODEL, write_parquet

    hashes = frame["model_hash"].dropna().unique() if "model_hash" in frame.columns else []
    write_parquet(frame, path, model_hash=";".join(sorted(map(str, hashes))) or NO_MODEL)
