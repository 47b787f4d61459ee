"""Tissue windows from the user's own slides, for calibrating and checking an INT8 translator.

Each slide is tiled at the model's microns per pixel with tiles one model window wide (the same
tissue detection and C++ batcher as translation, so the windows look exactly like the ones a
translation feeds the model). Tiles with at least ``min_tissue`` tissue are kept; a fixed-seed
draw then splits them into calibration windows (for the quantizer's activation ranges) and
held-out windows (for measuring agreement with fp32), spread over the slides.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from virtime.errors import InputDataError

__all__ = ["CalibrationSet", "calibration_windows"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CalibrationSet:
    """ImageNet-normalized windows ``(N, 3, W, W)`` float32 and the slide each came from."""

    calibration: np.ndarray
    calibration_slides: list[str]
    held_out: np.ndarray
    held_out_slides: list[str]
    tissue_tiles: dict[str, int]


def _slide_tiles(path: Path, *, model_mpp: float, window: int, min_tissue: float,
                 mpp: float | None, allow_mpp: bool, threads: int, limit: int,
                 rng: np.random.Generator) -> tuple[np.ndarray, int]:
    from virtime.batcher import iter_batches
    from virtime.slide import Slide
    from virtime.tiling import TilingConfig, make_tile_grid
    from virtime.tissue import detect_tissue
    from virtime.translation.config import TranslateConfig
    from virtime.translation.request import check_slide_mpp

    slide = Slide(path, mpp=mpp)
    check_slide_mpp(slide, TranslateConfig(mpp=mpp, allow_mpp=allow_mpp), model_mpp)
    grid = make_tile_grid(slide, TilingConfig(target_mpp=model_mpp, tile_size=window,
                                              min_tissue=min_tissue), detect_tissue(slide))
    if len(grid) == 0:
        raise InputDataError(f"{path}: no tissue found (no {window}-px window at {model_mpp:g} "
                             f"um/px with >= {min_tissue:.0%} tissue); calibrate on slides with "
                             f"tissue")
    pick = np.sort(rng.choice(len(grid), size=min(limit, len(grid)), replace=False))
    parts = [b.tensor.copy() for b in iter_batches(slide, grid, tiles=pick, threads=threads,
                                                   emit_uint8=False) if len(b)]
    tensors = np.concatenate(parts) if parts else np.empty((0, 3, window, window), np.float32)
    return tensors.astype(np.float32, copy=False), len(grid)


def calibration_windows(
    slides: list[str | os.PathLike[str]],
    *,
    model_mpp: float,
    window: int,
    calibration_tiles: int = 32,
    held_out_tiles: int = 32,
    min_tissue: float = 0.5,
    mpp: float | None = None,
    allow_mpp: bool = False,
    threads: int = 0,
    seed: int = 0,
) -> CalibrationSet:
    """Calibration and held-out windows drawn from the tissue of ``slides``.

    Raises (one line naming the file and the problem) for a slide that cannot be opened, lacks or
    has an implausible mpp, is too coarse for the model (:func:`check_slide_mpp`), or has no
    tissue; and :class:`~virtime.errors.InputDataError` when all slides together give fewer
    tissue windows than ``calibration_tiles + held_out_tiles``.
    """
    if calibration_tiles < 1 or held_out_tiles < 1:
        raise InputDataError("calibration and held-out tile counts must be >= 1")
    need = calibration_tiles + held_out_tiles
    rng = np.random.default_rng(seed)
    per_slide = -(-need // max(1, len(slides)))  # an even share; up to twice it, for short slides
    tensors, owners, found = [], [], {}
    for path in (Path(s) for s in slides):
        x, n_tissue = _slide_tiles(path, model_mpp=model_mpp, window=window,
                                   min_tissue=min_tissue, mpp=mpp, allow_mpp=allow_mpp,
                                   threads=threads, limit=min(need, 2 * per_slide), rng=rng)
        found[str(path)] = n_tissue
        tensors.append(x)
        owners += [path.name] * len(x)
        logger.info("%s: %d tissue windows, %d read for calibration", path, n_tissue, len(x))
    total = sum(len(x) for x in tensors)
    if total < need:
        raise InputDataError(
            f"{', '.join(Path(s).name for s in slides)}: too few tissue tiles for calibration "
            f"({total} windows of {window} px at {model_mpp:g} um/px; need "
            f"{calibration_tiles} to calibrate + {held_out_tiles} held out): add slides or lower "
            f"--calibration-tiles/--held-out-tiles")
    x_all = np.concatenate(tensors)
    names = np.asarray(owners)
    order = rng.permutation(len(x_all))  # each slide lands in both parts, in proportion
    held = order[:held_out_tiles]
    cal = order[held_out_tiles:need]
    return CalibrationSet(calibration=x_all[cal], calibration_slides=list(names[cal]),
                          held_out=x_all[held], held_out_slides=list(names[held]),
                          tissue_tiles=found)
