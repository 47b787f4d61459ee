"""Segment and measure one region (a tile with its halo) and keep the cells it owns.

A region is a ``(23, H, W)`` probability map at the model's mpp with its origin in global model
pixels. Cells are segmented over the whole region, so one that straddles the region's core border
is seen whole, and only cells whose nucleus centroid the ``owns`` rule gives to this region are
reported: with the halo wide enough (:attr:`CellConfig.halo_um`), every cell is measured the same
whichever tile owns it, and every cell is reported exactly once.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from virtime.cells.config import CellConfig
from virtime.cells.measure import measure_cells
from virtime.cells.segment import expand_to_cells, segment_nuclei
from virtime.channels import channel_index

__all__ = ["OwnRule", "cells_in_region"]

#: ``owns(x, y) -> bool array``: which global model-pixel positions this region reports.
OwnRule = Callable[[NDArray[np.float64], NDArray[np.float64]], NDArray[np.bool_]]

_CK = channel_index("CK")
#: Markers that define a cell's lineage; where their positive set changes, two cells touch.
_LINEAGE = tuple(channel_index(c) for c in ("CK", "CD3", "CD20", "CD138", "CD68", "CD34",
                                            "Tryptase", "Actin-D"))


def cells_in_region(probs: NDArray[np.floating], origin: tuple[int, int], mpp: float,
                    config: CellConfig = CellConfig(),
                    owns: OwnRule | None = None) -> tuple[dict[str, NDArray], int]:
    """Cells of a region whose centroid ``owns`` accepts (all cells without a rule).

    Parameters
    ----------
    probs
        ``(23, H, W)`` probabilities; pixels without data are 0.
    origin
        ``(x, y)`` of ``probs[:, 0, 0]`` in global model pixels.
    mpp
        The model's microns per pixel.

    Returns
    -------
    cells
        Columns ``x``, ``y`` (global model pixels), ``nucleus_px``, ``cell_px``, ``mean``
        ``(n, 23)`` and ``ck_fraction`` (the tumour-compartment score).
    tumour_px
        Owned pixels in the tumour compartment (for the tumour area of the slide).
    """
    probs = np.asarray(probs, dtype=np.float32)
    lineage = probs[list(_LINEAGE)] if config.split_by_lineage else None
    nuclei = segment_nuclei(probs[0], mpp, config, lineage)
    cells = expand_to_cells(nuclei, mpp, config)
    m = measure_cells(probs, nuclei, cells)
    ox, oy = origin
    gx, gy = m["x"] + ox, m["y"] + oy
    ck = _ck_fraction(probs[_CK], mpp, config)
    iy = np.clip(np.rint(m["y"]).astype(np.int64), 0, probs.shape[1] - 1)
    ix = np.clip(np.rint(m["x"]).astype(np.int64), 0, probs.shape[2] - 1)
    out = {"x": gx, "y": gy, "nucleus_px": m["nucleus_px"], "cell_px": m["cell_px"],
           "mean": m["mean"], "ck_fraction": ck[iy, ix]}
    tumour = ck >= config.compartment_threshold
    if owns is None:
        return out, int(tumour.sum())
    keep = owns(gx, gy)
    yy, xx = np.nonzero(tumour)
    tumour_px = int(owns(xx + float(ox), yy + float(oy)).sum()) if yy.size else 0
    return {k: v[keep] for k, v in out.items()}, tumour_px


def _ck_fraction(ck: NDArray[np.float32], mpp: float, config: CellConfig) -> NDArray[np.float32]:
    """Fraction of CK-positive pixels in the ``2·compartment_um`` square around each pixel."""
    size = max(1, int(round(2 * config.compartment_um / mpp)) | 1)
    pos = (ck > config.threshold("CK")).astype(np.float32)
    return ndimage.uniform_filter(pos, size, mode="constant", cval=0.0)
