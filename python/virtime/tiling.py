"""The tile grid at the model's resolution (C++ core).

Tiles are squares of ``tile_size`` pixels at ``target_mpp``; they are read from the coarsest
pyramid level that is still at least as fine as the target and resampled (area interpolation) to
the tile size. The grid covers the whole slide (edge tiles extend past it and read as white) with
stride ``tile_size - overlap``; tiles with a tissue fraction below ``min_tissue`` are dropped.
Coordinates are level-0 pixels.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from virtime.errors import InvalidArgumentError
from virtime.slide import Slide
from virtime.tissue import TissueMask

__all__ = ["TilingConfig", "TileGrid", "make_tile_grid"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TilingConfig:
    """Tile geometry: GigaTIME reads 512-px tiles at 0.25 um/px."""

    target_mpp: float = 0.25
    tile_size: int = 512
    overlap: int = 0
    min_tissue: float = 0.1
    level_tolerance: float = 0.05

    def __post_init__(self) -> None:
        if self.tile_size <= 0 or not self.target_mpp > 0:
            raise InvalidArgumentError("tile_size and target_mpp must be positive")
        if not 0 <= self.overlap < self.tile_size:
            raise InvalidArgumentError(f"overlap {self.overlap} must be in [0, tile_size)")
        if not 0.0 <= self.min_tissue <= 1.0:
            raise InvalidArgumentError("min_tissue must be in [0, 1]")


@dataclass(frozen=True)
class TileGrid:
    """Where to read each kept tile and how to resample it."""

    level: int
    level_mpp: float
    read_size: int
    tile_size: int
    tile_size_level0: float
    stride_level0: float
    cols: int
    rows: int
    xy: np.ndarray  # (n, 2) int64 level-0 top-left
    colrow: np.ndarray  # (n, 2) int64 grid position
    tissue_fraction: np.ndarray  # (n,)

    def __len__(self) -> int:
        return int(self.xy.shape[0])

    def to_frame(self) -> pd.DataFrame:
        """One row per tile: x, y, col, row, tissue_fraction."""
        return pd.DataFrame(
            {
                "x": self.xy[:, 0],
                "y": self.xy[:, 1],
                "col": self.colrow[:, 0],
                "row": self.colrow[:, 1],
                "tissue_fraction": self.tissue_fraction,
            }
        )


def make_tile_grid(
    slide: Slide, config: TilingConfig = TilingConfig(), tissue: TissueMask | None = None
) -> TileGrid:
    """Builds the grid; without ``tissue`` every tile is kept.

    Raises SlideTooSmallError when the slide is smaller than one tile, MissingMppError without mpp.
    """
    from virtime import _core

    params = _core.TilingParams()
    params.target_mpp = config.target_mpp
    params.tile_size = config.tile_size
    params.overlap = config.overlap
    params.min_tissue = config.min_tissue
    params.level_tolerance = config.level_tolerance
    mask = None if tissue is None else tissue.mask.astype(np.uint8)
    ds = 1.0 if tissue is None else tissue.downsample
    d = _core.make_tile_grid(slide._core, slide.mpp, params, mask, ds)
    if d["level_mpp"] > config.target_mpp * (1 + config.level_tolerance):
        log.warning(
            "%s: scanned at %.3f um/px, coarser than the model's %.3f um/px; tiles are upsampled",
            slide.path, d["level_mpp"], config.target_mpp,
        )
    return TileGrid(
        level=int(d["level"]),
        level_mpp=float(d["level_mpp"]),
        read_size=int(d["read_size"]),
        tile_size=int(d["tile_size"]),
        tile_size_level0=float(d["tile_size_level0"]),
        stride_level0=float(d["stride_level0"]),
        cols=int(d["cols"]),
        rows=int(d["rows"]),
        xy=np.asarray(d["xy"]),
        colrow=np.asarray(d["colrow"]),
        tissue_fraction=np.asarray(d["tissue_fraction"]),
    )
