"""What one slide's translation returns: :class:`TranslateResult` (its folder, counts, record)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from virtime.io import SlideFolder

__all__ = ["SUMMARY_COLUMNS", "TranslateResult"]

#: Columns of :attr:`TranslateResult.summary`.
SUMMARY_COLUMNS = ("slide_id", "status", "skipped", "tiles_done", "tiles_failed", "seconds",
                   "model_hash", "backend", "precision", "output_dir")


@dataclass
class TranslateResult:
    """What one slide's translation produced.

    ``record`` is the slide's ``summary.json`` (status, timings, fingerprint, failed tiles,
    config, ...); :attr:`summary` is the one-row table of the main facts.
    """

    slide_id: str
    output_dir: Path
    skipped: bool
    tiles_done: int = 0
    tiles_failed: int = 0
    seconds: float = 0.0
    record: dict[str, Any] = field(default_factory=dict)
    #: A skipped slide whose features were recomputed (they had been made with other settings).
    features_refreshed: bool = False

    @property
    def folder(self) -> SlideFolder:
        """The slide's output folder, to read what the translation wrote:
        ``result.folder.features()``, ``.cells()``, ``.mif()``."""
        return SlideFolder(self.output_dir)

    @property
    def summary(self) -> pd.DataFrame:
        """One row: slide_id, status (``done`` or ``skipped``), skipped, tiles_done,
        tiles_failed, seconds, model_hash, backend, precision, output_dir. A skipped slide's
        tiles and seconds are those of the run that made its folder."""
        r = self.record
        row = {
            "slide_id": self.slide_id,
            "status": "skipped" if self.skipped else str(r.get("status", "done")),
            "skipped": bool(self.skipped),
            "tiles_done": int(r.get("tiles_done", self.tiles_done)),
            "tiles_failed": int(r.get("tiles_failed", self.tiles_failed)),
            "seconds": float(r.get("seconds", self.seconds)),
            "model_hash": str(r.get("model_hash", "")),
            "backend": str(r.get("backend", "")),
            "precision": str(r.get("precision", "")),
            "output_dir": str(self.output_dir),
        }
        return pd.DataFrame([row], columns=list(SUMMARY_COLUMNS))
