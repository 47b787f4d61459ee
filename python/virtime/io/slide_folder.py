"""``SlideFolder``: one translated slide's output folder and every file in it, by name.

The translation writes these files, ``virtime features``, ``virtime view``, the cohort merge and
the report read them; naming them in one place keeps writers and readers from drifting apart.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from virtime.errors import InputDataError

__all__ = ["SlideFolder"]

#: The temporary name of an atomic write: ``.<target name>.<pid>.<random>.partial``.
_PARTIAL_NAME = re.compile(r"^\..+\.\d+\.[^.]+\.partial$")


@dataclass(frozen=True)
class SlideFolder:
    """``OUT/<slide_id>/`` of a translated slide.

    ``summary.json`` is written last and says ``"status": "done"``; a folder without it is an
    interrupted (resumable) run. Use :meth:`require_done` before trusting any other file.
    """

    path: Path

    # The file names, defined here once (readers and writers use these, never string literals).
    LOCK: ClassVar[str] = ".virtime.lock"
    ZARR: ClassVar[str] = "mif.ome.zarr"
    ZARR_MANIFEST: ClassVar[str] = "mif.ome.zarr.manifest.json"
    PARTIAL_TILES: ClassVar[str] = ".tiles.partial.jsonl"  # journal of an unfinished run
    LEGACY_PARTIAL_TILES: ClassVar[str] = ".tiles.partial.parquet"  # the same, before the journal
    TILES: ClassVar[str] = "tiles.parquet"
    TISSUE_MASK: ClassVar[str] = "tissue_mask.npy"
    FAILED_MASK: ClassVar[str] = "failed_mask.npy"
    THUMBNAIL: ClassVar[str] = "thumbnail.png"
    OME_TIFF: ClassVar[str] = "mif.ome.tiff"
    FEATURES: ClassVar[str] = "features.parquet"
    CELLS: ClassVar[str] = "cells.parquet"
    EMBEDDINGS: ClassVar[str] = "embeddings"
    PAGE: ClassVar[str] = "index.html"
    SUMMARY: ClassVar[str] = "summary.json"

    @classmethod
    def of(cls, out_root: str | os.PathLike[str], slide_id: str) -> SlideFolder:
        """The folder of ``slide_id`` under the output root ``out_root``."""
        return cls(Path(out_root) / slide_id)

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def slide_id(self) -> str:
        return self.path.name

    # The files, in the order the translation writes them.
    @property
    def lock(self) -> Path:
        return self.path / self.LOCK

    @property
    def zarr(self) -> Path:
        """Virtual mIF, OME-Zarr (NGFF 0.4) multiscale, uint8 probability x 255, axes c, y, x."""
        return self.path / self.ZARR

    @property
    def zarr_manifest(self) -> Path:
        """The canvas run manifest: settings and completed row bands (what makes resume work)."""
        return self.path / self.ZARR_MANIFEST

    @property
    def partial_tiles(self) -> Path:
        """The journal of tile rows of an unfinished run (replayed when it resumes)."""
        return self.path / self.PARTIAL_TILES

    @property
    def tiles(self) -> Path:
        """One row per tile: position, tissue fraction, per-channel positive fraction and mean."""
        return self.path / self.TILES

    @property
    def tissue_mask(self) -> Path:
        return self.path / self.TISSUE_MASK

    @property
    def failed_mask(self) -> Path:
        """Tissue that failed tiles left without a prediction (only when a tile failed)."""
        return self.path / self.FAILED_MASK

    @property
    def thumbnail(self) -> Path:
        return self.path / self.THUMBNAIL

    @property
    def ome_tiff(self) -> Path:
        return self.path / self.OME_TIFF

    @property
    def features(self) -> Path:
        return self.path / self.FEATURES

    @property
    def cells(self) -> Path:
        return self.path / self.CELLS

    @property
    def embeddings(self) -> Path:
        return self.path / self.EMBEDDINGS

    @property
    def page(self) -> Path:
        """The self-contained per-slide HTML page."""
        return self.path / self.PAGE

    @property
    def summary_file(self) -> Path:
        return self.path / self.SUMMARY

    def remove_stale_partials(self) -> list[Path]:
        """Delete the temporary files a killed run left in the folder; returns them.

        Atomic writers (:func:`virtime.io.atomic_path`, ``ParquetStream``) write
        ``.<name>.<pid>.<random>.partial`` and remove it on any error, but not after
        ``kill -9``. Call only while holding the folder's lock: then no live writer owns one.
        """
        stale = [p for p in self.path.glob(".*.partial")
                 if _PARTIAL_NAME.match(p.name) and p.is_file()]
        for p in stale:
            p.unlink(missing_ok=True)
        return stale

    def is_done(self) -> bool:
        """True when the summary says the translation finished (never raises)."""
        try:
            return self.summary().get("status") == "done"
        except InputDataError:
            return False

    def summary(self) -> dict[str, Any]:
        """``summary.json`` as a dict; InputDataError naming the file when missing or unreadable."""
        path = self.summary_file
        if not path.is_file():
            raise InputDataError(f"{path}: missing; the translation did not finish or is not "
                                 f"finished yet (wait for virtime translate or rerun it)")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputDataError(f"{path}: unreadable ({exc})") from None
        if not isinstance(data, dict):
            raise InputDataError(f"{path}: not a virtime summary")
        return data

    def require_done(self) -> dict[str, Any]:
        """The summary of a finished translation, or InputDataError saying why it is not one."""
        if not self.path.is_dir():
            raise InputDataError(f"{self.path}: no such output folder "
                                 f"(run virtime translate first)")
        summary = self.summary()
        if summary.get("status") != "done":
            raise InputDataError(f"{self.summary_file}: the translation is not done "
                                 f"(status {summary.get('status')!r}): not finished yet or "
                                 f"interrupted; wait for virtime translate or rerun it")
        return summary

    @property
    def slide_path(self) -> Path:
        """The H&E slide this folder was translated from (recorded in the summary)."""
        path = self.recorded_slide(self.require_done())
        if path is None:
            raise InputDataError(f"{self.summary_file}: names no H&E slide")
        return path

    @staticmethod
    def recorded_slide(summary: dict[str, Any]) -> Path | None:
        """The H&E slide a summary names, as an absolute path (None: it names none).

        ``summary["slide"]`` is absolute as translate writes it; a summary of an older virtime
        kept the path as typed, relative to the folder translate ran in, so its absolute
        ``source.path`` is used instead (the relative one only when there is nothing else).
        """
        slide = summary.get("slide")
        if slide and Path(str(slide)).is_absolute():
            return Path(str(slide))
        source = summary.get("source")
        recorded = source.get("path") if isinstance(source, dict) else None
        if recorded and Path(str(recorded)).is_absolute():
            return Path(str(recorded))
        return Path(str(slide)).absolute() if slide else None

    def read_tissue_mask(self, mmap: bool = True) -> Any:
        """The tissue mask (2-D, on the canvas grid), memory-mapped; ``None`` if the folder has
        none. InputDataError naming the file when it is not a 2-D boolean/uint8 ``.npy`` array
        (never unpickled)."""
        import numpy as np

        path = self.tissue_mask
        if not path.is_file():
            return None
        try:
            with open(path, "rb") as fh:
                if fh.read(6) != b"\x93NUMPY":
                    raise ValueError("not a .npy file")
            mask = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            reason = str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputDataError(f"{path}: not a tissue mask ({reason}); rerun virtime translate "
                                 f"with --force to rewrite it") from None
        if not isinstance(mask, np.ndarray) or mask.ndim != 2 or mask.dtype not in (
                np.bool_, np.uint8):
            what = (f"a {mask.ndim}-D {mask.dtype} array" if isinstance(mask, np.ndarray)
                    else type(mask).__name__)
            raise InputDataError(f"{path}: not a tissue mask ({what}, expected a 2-D boolean "
                                 f"array); rerun virtime translate with --force to rewrite it")
        return mask

    def read_tiles(self) -> Any:
        """The tile table as a DataFrame (after checking that the run finished)."""
        import pandas as pd

        self.require_done()
        return pd.read_parquet(self.tiles)

    def read_features(self) -> Any:
        """The slide's features row as a DataFrame."""
        from virtime.features.table import read_features

        self.require_done()
        return read_features(self.features)[0]

    def load_outputs(self) -> Any:
        """The verified probability pyramid, masks and metadata (``features.SlideOutputs``)."""
        from virtime.features.table import load_slide_outputs

        return load_slide_outputs(self.path)
