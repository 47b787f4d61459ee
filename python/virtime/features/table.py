"""Slide features from stored outputs, the per-slide Parquet row and the cohort table.

:func:`compute_slide_features` streams any (C, H, W) array-like (numpy, zarr) in row strips, so a
whole slide never has to be in memory. The stored outputs are read by
:func:`virtime.io.load_slide_outputs` and the tables by :func:`virtime.io.read_features`
(re-exported here), with the other code that knows a slide folder's files.
"""

from __future__ import annotations

import json
import logging
import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from virtime._progress import progress
from virtime.channels import CHANNEL_NAMES
from virtime.errors import InputDataError, MissingMppError, VirtimeWarning
from virtime.features.bands import column_blocks
from virtime.features.partials import SlideFeatureAccumulator
from virtime.io.parquet import read_features
from virtime.io.slide_folder import SlideFolder, SlideOutputs, load_slide_outputs

__all__ = [
    "FAILED_FILE",
    "FEATURES_FILE",
    "TISSUE_FILE",
    "SlideOutputs",
    "compute_slide_features",
    "features_from_bands",
    "features_from_outputs",
    "load_slide_outputs",
    "read_features",
    "write_features",
]

log = logging.getLogger(__name__)

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
    channels: Sequence[str] | None = None,
    strip_rows: int | None = None,
    max_block_bytes: int = 256 * 2**20,
    show_progress: bool = False,
    **settings: Any,
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
    channels : sequence of str, optional
        Names of the map's channels (default: the 23 GigaTIME channels).
    strip_rows : int, optional
        Rows per strip (rounded up to whole bins); default about 1024 rows.
    max_block_bytes : int
        A strip wider than this budget is read in column blocks (whole bins wide), so memory
        stays bounded on very wide slides; the accumulator stitches blocks exactly.
    show_progress : bool
        Show a progress bar over strips.
    **settings
        ``bin_um`` (64), ``threshold`` (0.5), ``analyse``, ``contexture``: as in
        :class:`SlideFeatureAccumulator` (one definition of the feature settings, there).

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
    acc = SlideFeatureAccumulator(mpp, channels=channels, **settings)
    target = strip_rows or max(_STRIP_TARGET_ROWS, acc.bin_px)
    step = max(1, math.ceil(target / acc.bin_px)) * acc.bin_px
    itemsize = np.dtype(getattr(prob, "dtype", np.uint8)).itemsize
    blocks = [(r0, cols) for r0 in range(0, H, step)
              for cols in column_blocks(C, step, W, itemsize, acc.bin_px, max_block_bytes)]
    with progress(blocks, desc="features", unit="block", enabled=show_progress) as bar:
        for r0, cols in bar:
            rows = (r0, min(H, r0 + step))
            block = np.asarray(prob[:, rows[0]:rows[1], cols[0]:cols[1]])
            tis = _tissue_block(block, tissue, rows, cols, (H, W), channels)
            acc.add_tile(block, tis, r0, cols[0])
    return acc.result()


#: File names of a translated slide's folder (aliases of :class:`virtime.io.SlideFolder`'s).
SUMMARY_FILE = SlideFolder.SUMMARY
TISSUE_FILE = SlideFolder.TISSUE_MASK
FAILED_FILE = SlideFolder.FAILED_MASK
FEATURES_FILE = SlideFolder.FEATURES


def _failure_count(out: SlideOutputs, failures: Sequence[dict[str, Any]] | None,
                   slide_dir: Path) -> int:
    """Failed tiles of the run: given by translation, else recorded in summary.json."""
    if failures is None:
        recorded = (out.summary or {}).get("failed_tiles", [])
        failures = recorded if isinstance(recorded, list) else []
    return _count_failed_tiles(failures, out.failed is not None, slide_dir)


def _count_failed_tiles(failures: Sequence[Any], have_mask: bool, slide_dir: Path) -> int:
    """Distinct failed tiles; InputDataError when tiles failed but no failed-tile mask says
    where."""
    n = len({int(f["tile"]) if isinstance(f, dict) and "tile" in f else i
             for i, f in enumerate(failures)})
    if n and not have_mask:
        raise InputDataError(f"{SlideFolder(slide_dir).failed_mask}: missing, but {n} tile(s) failed; "
                             f"their area cannot be left out (rerun virtime translate --force)")
    return n


def _check_share(max_failed_share: float) -> None:
    if not 0.0 <= max_failed_share <= 1.0:
        raise InputDataError(f"max_failed_share must be in [0, 1], got {max_failed_share}")


def features_from_outputs(
    slide_dir: str | os.PathLike[str],
    *,
    mpp: float | None = None,
    bin_um: float = 64.0,
    threshold: float = 0.5,
    max_failed_share: float = 0.05,
    failures: Sequence[dict[str, Any]] | None = None,
    computed: dict[str, Any] | None = None,
    write: bool = True,
    show_progress: bool = False,
) -> dict[str, Any]:
    """Recomputes a slide's features from its stored outputs; writes ``features.parquet``.

    Tissue under failed tiles (``failed_mask.npy``) is left out of every feature's denominator.
    The row carries ``tiles_failed``, ``tissue_mm2_failed``, ``failed_tissue_share`` (failed
    tissue over all tissue) and ``qc_failed_share_exceeded`` (share above ``max_failed_share``;
    a VirtimeWarning says so).

    Parameters
    ----------
    failures : list of dict, optional
        Failed-tile records of a translation that is finishing (it computes features before it
        writes ``summary.json``); by default they come from ``summary.json``, which must say done.
    computed : dict, optional
        The map features already accumulated from this slide's stored map and tissue mask, with
        these ``bin_um`` and ``threshold`` (a translation computes them from the canvas bands as
        it writes them, :class:`~virtime.features.bands.BandFeatures`): the map is then not
        read again.
    """
    _check_share(max_failed_share)
    d = Path(slide_dir)
    out = load_slide_outputs(d, require_done=failures is None)
    n_failed = _failure_count(out, failures, d)
    use_mpp = mpp if mpp is not None else out.mpp
    if use_mpp is None:
        raise MissingMppError(f"{d}: no mpp in the OME-Zarr metadata; pass --mpp")
    tissue = out.tissue
    failed_px = 0
    mask_px_um2 = 0.0
    if tissue is not None:
        H, W = out.prob.shape[1:]
        mask_px_um2 = (use_mpp * H / tissue.shape[0]) * (use_mpp * W / tissue.shape[1])
        if out.failed is not None:
            lost = out.failed != 0
            failed_px = int(lost.sum())
            tissue = (tissue != 0) & ~lost  # idempotent: translation already left them out
    feats = computed if computed is not None else compute_slide_features(
        out.prob, tissue, use_mpp, bin_um=bin_um, threshold=threshold, channels=out.channels,
        show_progress=show_progress)
    settings = {"mpp": use_mpp, "bin_um": bin_um, "threshold": threshold,
                "max_failed_share": max_failed_share}
    return _feature_row(d, out.slide_id, feats, n_failed, failed_px * mask_px_um2 / 1e6,
                        model_hash=out.model_hash, settings=settings, write=write)


def features_from_bands(
    slide_dir: str | os.PathLike[str],
    computed: dict[str, Any],
    *,
    shape_yx: tuple[int, int],
    tissue: np.ndarray,
    failed: np.ndarray | None,
    map_mpp: float,
    model_hash: str,
    failures: Sequence[dict[str, Any]],
    mpp: float | None = None,
    bin_um: float = 64.0,
    threshold: float = 0.5,
    max_failed_share: float = 0.05,
    write: bool = True,
) -> dict[str, Any]:
    """The features row of a slide a translation is finishing, from what it holds in memory.

    The same row and ``features.parquet`` as :func:`features_from_outputs` with ``computed``,
    without reading the folder back: ``computed`` are the map features the canvas bands fed
    (:class:`~virtime.features.bands.BandFeatures`, with this ``bin_um`` and ``threshold``),
    ``shape_yx`` the map's size, ``tissue`` / ``failed`` the masks just written (``failed``
    None when no tile failed), ``map_mpp`` and ``model_hash`` what the map records. Only the
    cell table, when there is one, is read (for the ``cells.*`` columns).
    """
    _check_share(max_failed_share)
    d = Path(slide_dir)
    n_failed = _count_failed_tiles(failures, failed is not None, d)
    use_mpp = mpp if mpp is not None else map_mpp
    H, W = shape_yx
    mask_px_um2 = (use_mpp * H / tissue.shape[0]) * (use_mpp * W / tissue.shape[1])
    failed_px = int((failed != 0).sum()) if failed is not None else 0
    settings = {"mpp": use_mpp, "bin_um": bin_um, "threshold": threshold,
                "max_failed_share": max_failed_share}
    return _feature_row(d, d.name, computed, n_failed, failed_px * mask_px_um2 / 1e6,
                        model_hash=model_hash, settings=settings, write=write)


def _feature_row(d: Path, slide_id: str, feats: dict[str, Any], n_failed: int,
                 failed_mm2: float, *, model_hash: str, settings: dict[str, Any],
                 write: bool) -> dict[str, Any]:
    """The slide's row: failed-tile columns, map features, cell features; written if asked."""
    max_failed_share = settings["max_failed_share"]
    kept_mm2 = float(feats.get("tissue.area_mm2", 0.0))
    share = failed_mm2 / (failed_mm2 + kept_mm2) if failed_mm2 + kept_mm2 > 0 else 0.0
    exceeded = bool(share > max_failed_share)
    if exceeded:
        warnings.warn(
            f"{d}: {n_failed} failed tile(s) cover {share:.1%} of the tissue "
            f"({failed_mm2:.3g} mm²), more than {max_failed_share:.1%}; their area is left out "
            f"of the features, and the slide is flagged (qc_failed_share_exceeded)",
            VirtimeWarning, stacklevel=3)
    row: dict[str, Any] = {"slide_id": slide_id, "tiles_failed": n_failed,
                           "tissue_mm2_failed": failed_mm2, "failed_tissue_share": share,
                           "qc_failed_share_exceeded": exceeded, **feats}
    from virtime.cells.features import slide_cell_features  # cells.* when cells.parquet exists

    row.update(slide_cell_features(d, kept_mm2))
    if write:
        write_features([row], SlideFolder(d).features_file, model_hash=model_hash,
                       settings=settings)
    return row


def write_features(
    rows: Sequence[dict[str, Any]],
    path: str | os.PathLike[str],
    *,
    model_hash: str = "",
    settings: dict[str, Any] | None = None,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Writes feature rows (one per slide, with ``slide_id``) to Parquet, atomically.

    Through :func:`virtime.io.write_parquet`: the schema metadata carries ``virtime.version``,
    ``virtime.model_hash`` and the feature settings (JSON) so a table always says what produced
    it; ``metadata`` adds more ``virtime.<key>`` strings (the cohort merge's left-out folders).
    """
    import pandas as pd

    from virtime.io import write_parquet

    df = pd.DataFrame(list(rows))
    if "slide_id" not in df.columns:
        raise InputDataError(f"features: rows written to {path} need a 'slide_id'")
    return write_parquet(df, path, model_hash=model_hash,
                         metadata={**(metadata or {}),
                                   "features.settings": json.dumps(settings or {})})
