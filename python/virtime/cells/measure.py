"""Per-cell measurements: centroid, nucleus and cell area, mean probability per channel.

Each channel is averaged over its compartment as GigaTIME's targets define it (the ``compartment``
of :mod:`virtime.channels`): nuclear channels (DAPI, Ki67, PHH3-B) over the nucleus, the others
over the expanded cell. One numba pass per channel accumulates the sums of all cells at once.

The compartment follows how the targets were drawn, not only biology: T-bet is a transcription
factor (nuclear), but the registry (and so our simulator's targets and the demo checkpoint) puts
it on the expanded nucleus; measured over the cell, it is averaged where its target lives.
"""

from __future__ import annotations

import numba
import numpy as np
from numpy.typing import NDArray

from virtime.channels import CHANNELS

__all__ = ["NUCLEAR_CHANNELS", "measure_cells"]

#: Channels measured over the nucleus (their GigaTIME target is the nuclear mask).
NUCLEAR_CHANNELS: tuple[str, ...] = tuple(c.name for c in CHANNELS if c.compartment == "nuclear")
_NUCLEAR = np.array([c.compartment == "nuclear" for c in CHANNELS])


@numba.njit(cache=True, nogil=True)
def _channel_sums(probs, nuc, cell, nuclear, n):
    c_count = probs.shape[0]
    npx = nuc.size
    sums = np.zeros((n + 1, c_count), np.float64)
    nf = nuc.ravel()
    cf = cell.ravel()
    for c in range(c_count):
        pc = probs[c].ravel()
        lab = nf if nuclear[c] else cf
        for i in range(npx):
            sums[lab[i], c] += pc[i]
    return sums


@numba.njit(cache=True, nogil=True)
def _geometry(nuc, cell, n):
    h, w = nuc.shape
    g = np.zeros((n + 1, 4), np.float64)  # nucleus px, sum y, sum x, cell px
    for y in range(h):
        for x in range(w):
            a = nuc[y, x]
            if a:
                g[a, 0] += 1.0
                g[a, 1] += y
                g[a, 2] += x
            b = cell[y, x]
            if b:
                g[b, 3] += 1.0
    return g


def measure_cells(probs: NDArray[np.floating], nuclei: NDArray[np.int32],
                  cells: NDArray[np.int32]) -> dict[str, NDArray]:
    """Measurements of cells ``1..n`` (``n = nuclei.max()``) in pixel units.

    Parameters
    ----------
    probs
        ``(23, H, W)`` probabilities in checkpoint channel order.
    nuclei, cells
        Matching label images (cell ``k`` grew from nucleus ``k``).

    Returns
    -------
    dict with ``y``, ``x`` (nucleus centroid, pixels), ``nucleus_px``, ``cell_px`` (areas) and
    ``mean`` ``(n, 23)`` (compartment means).
    """
    probs = np.ascontiguousarray(probs, dtype=np.float32)
    nuclei = np.ascontiguousarray(nuclei, dtype=np.int32)
    cells = np.ascontiguousarray(cells, dtype=np.int32)
    n = int(nuclei.max()) if nuclei.size else 0
    g = _geometry(nuclei, cells, n)[1:]
    sums = _channel_sums(probs, nuclei, cells, _NUCLEAR, n)[1:]
    npx = np.maximum(g[:, 0], 1.0)
    cpx = np.maximum(g[:, 3], 1.0)
    area = np.where(_NUCLEAR[None, :], npx[:, None], cpx[:, None])
    return {"y": g[:, 1] / npx, "x": g[:, 2] / npx, "nucleus_px": g[:, 0], "cell_px": g[:, 3],
            "mean": (sums / area).astype(np.float32)}
