"""Slide features from stored outputs, the per-slide Parquet row and the cohort table.

:func:`compute_slide_features` streams any (C, H, W) array-like (numpy, zarr) in row strips, so a
whole slide never has to be in memory. :func:`load_slide_outputs` is the only code that knows the
on-disk layout of a translated slide (kept apart so it is easy to adapt when that layout changes).
"""

from __future__ import annotations

import glob
import json
import logging
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from virtime import __version__
from virtime._progress import progress
from virtime.channels import CHANNEL_NAMES
from virtime.errors import InputDataError, MissingMppError
from virtime.features.contexture import ContextureConfig
from virtime.features.partials import SlideFeatureAccumulator

__all__ = [
    "SlideOutputs",
    "compute_slide_features",
    "load_slide_outputs",
    "features_from_outputs",
    "write_features",
    "read_features",
    "merge_cohort",
    "FEATURES_FILE",
]

log = logging.getLogger(__name__)

FEATURES_FILE = "features.parquet"
_STRIP_TARGET_ROWS = 1024


def _tissue_block(
    block: np.ndarray,
    tissue: Any,
    rows: tuple[int, int],
    cols: tuple[int, int],
    shape: tuple[int, int],
    channels: Sequence[str],
) -> np.ndarray:
    """Tissue mask of a canvas block; nearest-neighbour scaled if stored at lower resolution."""
    if tissue is None:  # derived: DAPI > 0 when present, else any channel > 0
        if "DAPI" in channels:
            return np.asarray(block[list(channels).index("DAPI")] > 0)
        return np.asarray((block > 0).any(axis=0))
    th, tw = tissue.shape
    H, W = shape
    if (th, tw) == (H, W):
        return np.asarray(tissue[rows[0]:rows[1], cols[0]:cols[1]]) != 0
    ri = np.minimum((np.arange(*rows) * th) // H, th - 1)
    ci = np.minimum((np.arange(*cols) * tw) // W, tw - 1)
    return np.asarray(tissue)[ri][:, ci] != 0


def compute_slide_features(
    prob: Any,
    tissue: Any,
    mpp: float,
    *,
    bin_um: float = 64.0,
    threshold: float = 0.5,
    channels: Sequence[str] | None = None,
    analyse: Sequence[str] | None = None,
    contexture: ContextureConfig | None = None,
    strip_rows: int | None = None,
    max_block_bytes: int = 256 * 2**20,
    show_progress: bool = False,
) -> dict[str, float | str]:
    """Features of one slide from a (C, H, W) probability map, read in row strips.

    Parameters
    ----------
    prob : array-like (C, H, W), uint8 (probability x 255) or float32
        Anything sliceable as ``prob[:, r0:r1, :]`` (numpy, zarr, dask computed per strip).
    tissue : array-like (h, w) or None
        Tissue mask; may be coarser than the map (scaled by nearest neighbour). None derives it
        as DAPI > 0 (or any channel > 0 without DAPI).
    mpp : float
        Microns per pixel of ``prob``.
    bin_um, threshold, channels, analyse, contexture
        As in :class:`SlideFeatureAccumulator`.
    strip_rows : int, optional
        Rows per strip (rounded up to whole bins); default about 1024 rows.
    max_block_bytes : int
        A strip wider than this budget is read in column blocks (whole bins wide), so memory
        stays bounded on very wide slides; the accumulator stitches blocks exactly.
    show_progress : bool
        Show a progress bar over strips.

    Returns
    -------
    dict
        Feature name -> value (see :meth:`SlideFeatureAccumulator.result`).
    """
    shape = tuple(prob.shape)
    if len(shape) != 3:
        raise InputDataError(f"features: probability map must be (C, H, W), got shape {shape}")
    C, H, W = shape
    if channels is None:
        if C != len(CHANNEL_NAMES):
            raise InputDataError(
                f"features: map has {C} channels; pass channel names (default expects 23)"
            )
        channels = CHANNEL_NAMES
    acc = SlideFeatureAccumulator(mpp, bin_um=bin_um, threshold=threshold, channels=channels,
                                  analyse=analyse, contexture=contexture)
    target = strip_rows or max(_STRIP_TARGET_ROWS, acc.bin_px)
    step = max(1, math.ceil(target / acc.bin_px)) * acc.bin_px
    itemsize = np.dtype(getattr(prob, "dtype", np.uint8)).itemsize
    width = max(1, max_block_bytes // max(1, C * step * itemsize) // acc.bin_px) * acc.bin_px
    blocks = [(r0, c0) for r0 in range(0, H, step) for c0 in range(0, W, width)]
    with progress(blocks, desc="features", unit="block", enabled=show_progress) as bar:
        for r0, c0 in bar:
            rows = (r0, min(H, r0 + step))
            cols = (c0, min(W, c0 + width))
            block = np.asarray(prob[:, rows[0]:rows[1], cols[0]:cols[1]])
            tis = _tissue_block(block, tissue, rows, cols, (H, W), channels)
            acc.add_tile(block, tis, r0, c0)
    return acc.result()


@dataclass
class SlideOutputs:
    """What :func:`load_slide_outputs` found for one slide."""

    slide_id: str
    prob: Any
    tissue: np.ndarray | None
    mpp: float | None
    channels: tuple[str, ...]
    model_hash: str
    attrs: dict[str, Any] = field(default_factory=dict)
    levels: list[Any] = field(default_factory=list)

    def overview(self, max_px: int = 1024) -> np.ndarray:
        """The finest pyramid level whose larger side is at most ``max_px`` (else the coarsest)."""
        levels = self.levels or [self.prob]
        for arr in levels:
            if max(arr.shape[1:]) <= max_px:
                return np.asarray(arr[:])
        return np.asarray(levels[-1][:])


def _multiscales(attrs: dict[str, Any]) -> list[dict[str, Any]]:
    if "ome" in attrs and isinstance(attrs["ome"], dict):  # NGFF 0.5 (zarr v3)
        attrs = attrs["ome"]
    ms = attrs.get("multiscales", [])
    return [m for m in ms if isinstance(m, dict)] if isinstance(ms, list) else []


def load_slide_outputs(slide_dir: str | os.PathLike[str]) -> SlideOutputs:
    """Reads a translated slide's stored outputs (layout may change: adapt here only).

    Expects ``<slide_dir>/mif.ome.zarr`` (OME-Zarr multiscale, level ``0`` the finest, axes
    c, y, x, uint8 probability x 255) and optionally ``<slide_dir>/tissue_mask.npy``; without it
    the tissue is derived from DAPI > 0. mpp comes from the level-0 scale transform (µm), channel
    names from the ``omero`` metadata and the model hash from a ``model_hash`` attribute
    (top level or under ``virtime``).
    """
    import zarr

    d = Path(slide_dir)
    store = d / "mif.ome.zarr"
    if not store.exists():
        raise InputDataError(f"features: {store} not found (expected the slide's OME-Zarr map)")
    try:
        group = zarr.open_group(str(store), mode="r")
    except Exception as exc:  # zarr raises several types for a bad store
        raise InputDataError(f"features: cannot open {store}: {exc}") from exc
    attrs: dict[str, Any] = dict(group.attrs)
    ms = _multiscales(attrs)
    level_path = "0"
    mpp: float | None = None
    if ms:
        ds0 = ms[0].get("datasets", [{}])[0]
        level_path = str(ds0.get("path", "0"))
        axes = [a["name"] if isinstance(a, dict) else a for a in ms[0].get("axes", [])]
        for tr in ds0.get("coordinateTransformations", []):
            if tr.get("type") == "scale" and "y" in axes:
                mpp = float(tr["scale"][axes.index("y")])
    try:
        prob: Any = group[level_path]
    except KeyError:
        raise InputDataError(f"features: {store} has no level {level_path!r}") from None
    if len(getattr(prob, "shape", ())) != 3:
        raise InputDataError(f"features: {store}/{level_path} is not a (c, y, x) array")
    ome: Any = attrs.get("ome") if isinstance(attrs.get("ome"), dict) else {}
    omero: Any = attrs.get("omero") or ome.get("omero") or {}
    chans: Any = omero.get("channels", []) if isinstance(omero, dict) else []
    labels = tuple(str(c.get("label", "")) if isinstance(c, dict) else "" for c in chans)
    if len(labels) != prob.shape[0] or not all(labels):
        labels = CHANNEL_NAMES if prob.shape[0] == len(CHANNEL_NAMES) else ()
    if not labels:
        raise InputDataError(f"features: {store}: {prob.shape[0]} channels and no channel names")
    vt: Any = attrs.get("virtime") if isinstance(attrs.get("virtime"), dict) else {}
    model_hash = str(attrs.get("model_hash") or vt.get("model_hash") or vt.get("model_sha256")
                     or "")
    tissue_path = d / "tissue_mask.npy"
    tissue = np.load(tissue_path) if tissue_path.exists() else None
    if tissue is not None and tissue.ndim != 2:
        raise InputDataError(f"features: {tissue_path} must be 2-D, got shape {tissue.shape}")
    levels = []
    for ds in (ms[0].get("datasets", []) if ms else []):
        try:
            levels.append(group[str(ds.get("path"))])
        except KeyError:
            break
    return SlideOutputs(d.name, prob, tissue, mpp, labels, model_hash, attrs, levels)


def features_from_outputs(
    slide_dir: str | os.PathLike[str],
    *,
    mpp: float | None = None,
    bin_um: float = 64.0,
    threshold: float = 0.5,
    write: bool = True,
    show_progress: bool = False,
) -> dict[str, Any]:
    """Recomputes a slide's features from its stored outputs; writes ``features.parquet``."""
    out = load_slide_outputs(slide_dir)
    use_mpp = mpp if mpp is not None else out.mpp
    if use_mpp is None:
        raise MissingMppError(f"features: {slide_dir}: no mpp in the OME-Zarr metadata; pass --mpp")
    feats = compute_slide_features(out.prob, out.tissue, use_mpp, bin_um=bin_um,
                                   threshold=threshold, channels=out.channels,
                                   show_progress=show_progress)
    row: dict[str, Any] = {"slide_id": out.slide_id, **feats}
    if write:
        settings = {"mpp": use_mpp, "bin_um": bin_um, "threshold": threshold}
        write_features([row], Path(slide_dir) / FEATURES_FILE, model_hash=out.model_hash,
                       settings=settings)
    return row


def _atomic_write_table(table: Any, path: Path) -> None:
    import pyarrow.parquet as pq

    from virtime.stitch.atomic import atomic_path

    with atomic_path(path) as tmp:
        pq.write_table(table, str(tmp))


def write_features(
    rows: Sequence[dict[str, Any]],
    path: str | os.PathLike[str],
    *,
    model_hash: str = "",
    settings: dict[str, Any] | None = None,
) -> Path:
    """Writes feature rows (one per slide, with ``slide_id``) to Parquet, atomically.

    The schema metadata carries ``virtime.version``, ``virtime.model_hash`` and the feature
    settings (JSON) so a table always says what produced it.
    """
    import pandas as pd
    import pyarrow as pa

    df = pd.DataFrame(list(rows))
    if "slide_id" not in df.columns:
        raise InputDataError(f"features: rows written to {path} need a 'slide_id'")
    table = pa.Table.from_pandas(df, preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta[b"virtime.version"] = __version__.encode()
    meta[b"virtime.model_hash"] = model_hash.encode()
    meta[b"virtime.features.settings"] = json.dumps(settings or {}).encode()
    table = table.replace_schema_metadata(meta)
    p = Path(path)
    _atomic_write_table(table, p)
    return p


def read_features(path: str | os.PathLike[str]) -> tuple[Any, dict[str, str]]:
    """A features table and its virtime metadata (``version``, ``model_hash``, ``settings``)."""
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:
        raise InputDataError(f"features: cannot read {path}: {exc}") from exc
    raw = table.schema.metadata or {}
    meta = {k.decode()[len("virtime."):]: v.decode() for k, v in raw.items()
            if k.startswith(b"virtime.")}
    return table.to_pandas(), meta


def merge_cohort(
    out_dir: str | os.PathLike[str], output: str | os.PathLike[str]
) -> Path:
    """Concatenates ``<out_dir>/*/features.parquet`` into one cohort table, atomically.

    Raises InputDataError when there is nothing to merge or a slide_id repeats; differing model
    hashes are allowed but warned about and all recorded (``;``-joined) in the metadata.
    """
    import pandas as pd

    paths = sorted(glob.glob(os.path.join(os.fspath(out_dir), "*", FEATURES_FILE)))
    if not paths:
        raise InputDataError(f"features: no */{FEATURES_FILE} under {out_dir}")
    frames, hashes, settings = [], [], []
    for p in paths:
        df, meta = read_features(p)
        if "slide_id" not in df.columns:
            raise InputDataError(f"features: {p} has no 'slide_id' column")
        frames.append(df)
        hashes.append(meta.get("model_hash", ""))
        settings.append(meta.get("features.settings", "{}"))
    cohort = pd.concat(frames, ignore_index=True, sort=False)
    dup = cohort["slide_id"][cohort["slide_id"].duplicated()].tolist()
    if dup:
        raise InputDataError(f"features: slide_id repeated in {out_dir}: {dup[:5]}")
    uniq = sorted(set(hashes))
    if len(uniq) > 1:
        warnings.warn(f"features: merging slides from {len(uniq)} different models", UserWarning,
                      stacklevel=2)
    if len(set(settings)) > 1:
        warnings.warn("features: merging slides computed with different feature settings",
                      UserWarning, stacklevel=2)
    log.info("merged %d slides from %s", len(cohort), out_dir)
    return write_features(cohort.to_dict("records"), output, model_hash=";".join(uniq),
                          settings=json.loads(settings[0]) if len(set(settings)) == 1 else {})
