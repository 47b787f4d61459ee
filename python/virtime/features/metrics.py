"""Numba kernels: one fused pass over a tile that produces every per-channel partial sum.

Why one kernel: a slide map is large (23 x 8192 x 8192 uint8 is 1.5 GB) and every metric needs
only a few running sums, so reading each pixel once and keeping the sums in registers is an order
of magnitude faster than one numpy expression per metric (each of which materialises full-size
temporaries). Work is parallel over *bands*: one band is the part of the tile inside one row
of the global spatial-bin grid, so bands write disjoint rows of the binned counts and need no
locks; each band also keeps its own sums, reduced afterwards in a fixed order. The thread count
is ``numba.get_num_threads()`` (set it with ``numba.set_num_threads``).

Units: sums are in the input's native units (uint8 values 0..255 or float32 probabilities) and
accumulated in float64. For uint8 input every sum is an integer below 2**53, hence exact, so
tile-wise and whole-canvas results agree bit for bit. Callers convert to probabilities later.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numba
import numpy as np

__all__ = ["TilePartials", "tile_partials", "N_SUMS", "SUM_NAMES"]

#: Order of the per-channel sums in ``TilePartials.sums`` (rows).
SUM_NAMES: tuple[str, ...] = ("pos", "sum", "sum_pos", "sumsq", "sumsq_pos", "tv")
N_SUMS = len(SUM_NAMES)
_POS, _SUM, _SUMP, _SQ, _SQP, _TV = range(N_SUMS)


@dataclass
class TilePartials:
    """Partial sums of one tile (see :func:`tile_partials`).

    Attributes
    ----------
    n_tissue : int
        Tissue pixels in the tile.
    sums : ndarray, shape (N_SUMS, K), float64
        Per analysed channel: positive-pixel count, sum, sum on positives, sum of squares, sum of
        squares on positives, and the within-tile total variation (sum of absolute forward
        differences between 4-neighbour tissue pixels), all in native units.
    cooc : ndarray, shape (K, K), float64
        ``cooc[a, b]`` = tissue pixels positive in both a and b (upper triangle and diagonal only).
    bins : ndarray, shape (nby, nbx, K + 1), float64
        Per global spatial bin touched by the tile: positive counts per channel, then (last slot)
        tissue pixels. Bin (0, 0) of this array is global bin ``(by0, bx0)``.
    by0, bx0 : int
        Global index of the first bin row / column.
    """

    n_tissue: int
    sums: np.ndarray
    cooc: np.ndarray
    bins: np.ndarray
    by0: int
    bx0: int


@numba.njit(cache=False, nogil=True)
def _band(prob, tissue, idx, thr, r0, r1, bxi, sums, cooc, binrow):
    """One band of rows [r0, r1): accumulate into this band's own output slices.

    Returns (tissue pixel count, nan flag).
    """
    K = idx.shape[0]
    maskrow = np.zeros(tissue.shape[1], np.uint32)
    setbits = np.zeros(K, np.int64)
    h = tissue.shape[0]
    w = tissue.shape[1]
    nt = 0
    has_nan = False
    for y in range(r0, r1):
        for x in range(w):
            maskrow[x] = 0
        for x in range(w):
            if tissue[y, x]:
                nt += 1
                binrow[bxi[x], K] += 1.0
        for k in range(K):
            c = idx[k]
            s = 0.0
            sp = 0.0
            sq = 0.0
            sqp = 0.0
            tv = 0.0
            npos = 0
            bit = np.uint32(1) << np.uint32(k)
            for x in range(w):
                v = np.float64(prob[c, y, x])
                if v != v:
                    has_nan = True
                    continue
                if not tissue[y, x]:
                    continue
                s += v
                sq += v * v
                if v > thr:
                    npos += 1
                    sp += v
                    sqp += v * v
                    maskrow[x] |= bit
                    binrow[bxi[x], k] += 1.0
                if x + 1 < w and tissue[y, x + 1]:
                    tv += abs(np.float64(prob[c, y, x + 1]) - v)
                if y + 1 < h and tissue[y + 1, x]:
                    tv += abs(np.float64(prob[c, y + 1, x]) - v)
            sums[_POS, k] += npos
            sums[_SUM, k] += s
            sums[_SUMP, k] += sp
            sums[_SQ, k] += sq
            sums[_SQP, k] += sqp
            sums[_TV, k] += tv
        # co-occurrence: a run of equal masks is flushed once (long runs on smooth maps)
        prev = maskrow[0]
        run = 1
        for x in range(1, w + 1):
            if x < w and maskrow[x] == prev:
                run += 1
                continue
            if prev != 0:
                m = 0
                for a in range(K):
                    if prev & (np.uint32(1) << np.uint32(a)):
                        setbits[m] = a
                        m += 1
                for i in range(m):
                    for j in range(i, m):
                        cooc[setbits[i], setbits[j]] += run
            if x < w:
                prev = maskrow[x]
                run = 1
    return nt, has_nan


def _run_bands(prob, tissue, idx, thr, y0, bin_px, bxi, nby, nbx):
    """Runs the bands on ``numba.get_num_threads()`` threads (the kernel releases the GIL).

    Plain threads over a serial ``nogil`` kernel instead of ``prange``: same speed here, but the
    parallel-accelerator compile took ~10x longer, which dominates short runs and the tests.
    """
    K = idx.shape[0]
    h = tissue.shape[0]
    first = y0 // bin_px
    sums = np.zeros((nby, N_SUMS, K))
    cooc = np.zeros((nby, K, K))
    bins = np.zeros((nby, nbx, K + 1))
    ntis = np.zeros(nby, np.int64)
    nans = np.zeros(nby, np.bool_)

    def one(b: int) -> None:
        r0 = max(0, (first + b) * bin_px - y0)
        r1 = min(h, (first + b + 1) * bin_px - y0)
        ntis[b], nans[b] = _band(prob, tissue, idx, thr, r0, r1, bxi, sums[b], cooc[b], bins[b])

    n_threads = min(numba.get_num_threads(), nby)
    if n_threads <= 1:
        for b in range(nby):
            one(b)
    else:
        with ThreadPoolExecutor(n_threads) as pool:
            list(pool.map(one, range(nby)))
    # reduce in a fixed order: deterministic regardless of thread count
    return int(ntis.sum()), bool(nans.any()), sums.sum(axis=0), cooc.sum(axis=0), bins


def tile_partials(
    prob: np.ndarray,
    tissue: np.ndarray,
    idx: np.ndarray,
    thr_native: float,
    y0: int,
    x0: int,
    bin_px: int,
) -> tuple[TilePartials, bool]:
    """Every partial sum of one tile in one parallel pass.

    Parameters
    ----------
    prob : ndarray (C, h, w), uint8 or float32
        Probability map of the tile (uint8 = probability x 255).
    tissue : ndarray (h, w), bool or uint8
        Tissue mask; nonzero = tissue.
    idx : ndarray (K,), int64
        Indices into ``C`` of the channels to analyse (at most 32).
    thr_native : float
        Positivity threshold in native units (``value > thr_native`` is positive).
    y0, x0 : int
        Canvas-pixel offset of the tile, which aligns its bins to the global grid.
    bin_px : int
        Spatial bin side in pixels.

    Returns
    -------
    (TilePartials, bool)
        The partials and whether a NaN was seen in an analysed channel.
    """
    h, w = tissue.shape
    if tissue.dtype == np.bool_:
        tissue = tissue.view(np.uint8)
    by0 = y0 // bin_px
    bx0 = x0 // bin_px
    nby = (y0 + h - 1) // bin_px - by0 + 1 if h else 0
    nbx = (x0 + w - 1) // bin_px - bx0 + 1 if w else 0
    bxi = ((np.arange(w, dtype=np.int64) + x0) // bin_px - bx0).astype(np.int64)
    K = len(idx)
    if h == 0 or w == 0:
        empty = TilePartials(0, np.zeros((N_SUMS, K)), np.zeros((K, K)),
                             np.zeros((0, 0, K + 1)), by0, bx0)
        return empty, False
    nt, has_nan, sums, cooc, bins = _run_bands(
        prob, tissue, idx, float(thr_native), int(y0), int(bin_px), bxi, int(nby), int(nbx)
    )
    return TilePartials(int(nt), sums, cooc, bins, by0, bx0), bool(has_nan)
