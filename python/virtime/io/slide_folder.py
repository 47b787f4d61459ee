"""``SlideFolder``: one translated slide's output folder and every file in it, by name.

The translation writes these files, ``virtime features``, ``virtime view``, the cohort merge and
the report read them; naming them in one place keeps writers and readers from drifting apart.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from virtime.errors import InputDataError
from virtime.io.atomic import RunManifest
from virtime.io.omezarr import read_ome_zarr
from virtime.io.parquet import read_features

__all__ = ["SlideFolder", "SlideOutputs", "load_slide_outputs"]

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
    def features_file(self) -> Path:
        return self.path / self.FEATURES

    @property
    def cells_file(self) -> Path:
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

    def summary_or_none(self) -> dict[str, Any] | None:
        """``summary.json`` as a dict, or None when it is missing, unreadable or not a dict:
        for a rerun's or a cohort's look at a folder, where no summary is an answer, not an
        error."""
        try:
            return self.summary()
        except InputDataError:
            return None

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

    # What a finished translation produced, read (each checks that the run finished first).
    def features(self) -> Any:
        """The slide's features row as a DataFrame (:func:`virtime.io.read_features`)."""
        self.require_done()
        return read_features(self.features_file)[0]

    def cells(self) -> Any:
        """The virtual single cells (``translate --cells``) as a DataFrame, one row per cell."""
        import pandas as pd

        self.require_done()
        path = self.cells_file
        if not path.is_file():
            raise InputDataError(f"{path}: not found (translated without --cells; rerun "
                                 f"virtime translate --cells)")
        return pd.read_parquet(path)

    def mif(self) -> Any:
        """The virtual mIF at full canvas resolution: the level-0 ``(c, y, x)`` uint8 array of
        the OME-Zarr map (probability x 255), read lazily; every chunk is checked to be on disk
        and whole first, and a chunk that fails to decode is an error naming its file."""
        self.require_done()
        return read_ome_zarr(self.zarr, verify=True).levels[0]

    def load_outputs(self) -> SlideOutputs:
        """The verified probability pyramid, masks and metadata (:func:`load_slide_outputs`)."""
        return load_slide_outputs(self.path)


@dataclass
class SlideOutputs:
    """What :func:`load_slide_outputs` found for one slide.

    ``tissue`` is the stored tissue mask (without what failed tiles covered); ``failed`` the
    tissue pixels that failed tiles left without a prediction (None when no tile failed) and
    ``summary`` the run's ``summary.json`` (None for a map virtime did not translate).
    """

    slide_id: str
    prob: Any
    tissue: np.ndarray | None
    mpp: float | None
    channels: tuple[str, ...]
    model_hash: str
    attrs: dict[str, Any] = field(default_factory=dict)
    levels: list[Any] = field(default_factory=list)
    failed: np.ndarray | None = None
    summary: dict[str, Any] | None = None

    def overview(self, max_px: int = 1024) -> np.ndarray:
        """The finest pyramid level whose larger side is at most ``max_px`` (else the coarsest)."""
        levels = self.levels or [self.prob]
        for arr in levels:
            if max(arr.shape[1:]) <= max_px:
                return np.asarray(arr[:])
        return np.asarray(levels[-1][:])


def _read_summary(folder: SlideFolder, require_done: bool) -> dict[str, Any] | None:
    """``summary.json`` when present (it must say done); absent only where allowed."""
    if not folder.summary_file.is_file():
        if require_done and folder.zarr_manifest.is_file():  # a virtime run that never finished
            folder.summary()  # raises, naming the missing file
        return None
    return folder.require_done()


def _check_manifest(folder: SlideFolder) -> None:
    """The canvas' run manifest, when there is one, must say the map was finished."""
    path = folder.zarr_manifest
    if not path.exists():
        return
    if not RunManifest.load(path).finished:
        raise InputDataError(f"{path}: the map is unfinished (an interrupted translation); "
                             f"rerun virtime translate")


def _load_mask(path: Path, what: str) -> np.ndarray:
    try:
        mask = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise InputDataError(f"{path}: unreadable {what} ({exc})") from None
    if mask.ndim != 2:
        raise InputDataError(f"{path}: {what} must be 2-D, got shape {mask.shape}")
    return mask


def load_slide_outputs(
    slide_dir: str | os.PathLike[str], *, require_done: bool = True
) -> SlideOutputs:
    """Reads a translated slide's stored outputs, refusing unfinished or damaged ones.

    Expects ``<slide_dir>/mif.ome.zarr`` (OME-Zarr multiscale, level ``0`` the finest, axes
    c, y, x, uint8 probability x 255) and ``<slide_dir>/tissue_mask.npy``, plus
    ``failed_mask.npy`` when tiles failed. mpp comes from the level-0 scale transform (µm),
    channel names from the ``omero`` metadata and the model hash from a ``model_hash`` attribute
    (top level or under ``virtime``).

    Every chunk of every pyramid level must be on disk and whole (a missing chunk would read as
    zeros); the canvas manifest, when present, and ``summary.json`` must say the run finished
    (``require_done=False`` accepts a missing summary: translation computes features before it
    writes one). Any of these failing raises InputDataError naming the file.
    """
    folder = SlideFolder(slide_dir)
    d, store = folder.path, folder.zarr
    if not store.exists():
        raise InputDataError(f"{store}: not found (expected the slide's OME-Zarr map)")
    summary = _read_summary(folder, require_done)
    _check_manifest(folder)
    image = read_ome_zarr(store, verify=True)
    tissue_path = folder.tissue_mask
    if not tissue_path.is_file():
        raise InputDataError(f"{tissue_path}: missing (the tissue mask; without it every "
                             f"feature's denominator is unknown); rerun virtime translate")
    tissue = _load_mask(tissue_path, "tissue mask")
    failed_path = folder.failed_mask
    failed = _load_mask(failed_path, "failed-tile mask") if failed_path.is_file() else None
    if failed is not None and failed.shape != tissue.shape:
        raise InputDataError(f"{failed_path}: shape {failed.shape} differs from the tissue "
                             f"mask's {tissue.shape}")
    return SlideOutputs(d.name, image.levels[0], tissue, image.mpp, image.channels,
                        image.model_hash, image.attrs, list(image.levels), failed, summary)

