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

import pandas as pd

from virtime import _core
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


class TileGrid(_core.TileGrid):
    """Where to read each kept tile and how to resample it: the C++ grid itself.

    Read-only: ``level`` (pyramid level read), ``level_mpp``, ``read_size`` (region side read
    there), ``tile_size``, ``tile_size_level0`` and ``stride_level0`` (level-0 pixels), ``cols`` and
    ``rows`` (the full grid before the tissue filter), and per kept tile ``xy`` ((n, 2) int64
    level-0 top-left), ``colrow`` ((n, 2) int64 grid position) and ``tissue_fraction`` ((n,)),
    arrays that view the grid's own buffers.
    """

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
    params = _core.TilingParams()
    params.target_mpp = config.target_mpp
    params.tile_size = config.tile_size
    params.overlap = config.overlap
    params.min_tissue = config.min_tissue
    params.level_tolerance = config.level_tolerance
    grid = TileGrid(_core.make_tile_grid(slide._core, slide.mpp, params, tissue))
    if grid.level_mpp > config.target_mpp * (1 + config.level_tolerance):
        log.warning(
            "%s: scanned at %.3f um/px, coarser than the model's %.3f um/px; tiles are upsampled",
            slide.path, grid.level_mpp, config.target_mpp,
        )
    return grid
