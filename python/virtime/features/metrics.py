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
from numba.core import types
from numba.extending import intrinsic

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


@intrinsic
def _popcount(typingctx, x):  # type: ignore[no-untyped-def]
    """LLVM ctpop: one POPCNT instruction on x86-64 (numba has no popcount of its own)."""
    if not isinstance(x, types.Integer):
        return None

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.ctpop(args[0])

    return x(x), codegen


@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "contract", "nsz", "arcp"})
def _band(prob, tissue, idx, thr, zero, r0, r1, segs, sums, cooc, binrow):
    """One band of rows [r0, r1): accumulate into this band's own output slices.

    ``zero`` (int64 for uint8 input, float64 for float) sets the accumulator type: integer
    arithmetic is exact and vectorises; the loops are branch-free (tissue and positivity are
    0/1 multipliers) so noisy maps do not stall on mispredicted branches. ``segs`` are the column
    ranges of the bins, so bin counts are added once per segment instead of scattered per pixel.
    No ``nnan`` fast-math flag: the NaN check must survive. Returns (tissue pixels, nan seen).
    """
    K = idx.shape[0]
    h = tissue.shape[0]
    w = tissue.shape[1]
    nseg = segs.shape[0] - 1
    nw = (w + 63) // 64
    planes = np.zeros((K, nw), np.uint64)  # positive bits of this row, 64 pixels a word
    rowpos = np.zeros(K, np.int64)
    hp = np.zeros(w, np.uint8)
    vp = np.zeros(w, np.uint8)
    nt = 0
    has_nan = False
    for y in range(r0, r1):
        below = y + 1 < h
        tr = tissue[y]
        trn = tissue[y + 1] if below else tissue[y]
        # loops run over 0-based views: indices provably >= 0, so no wraparound selects
        # and LLVM vectorises them
        for x in range(w):
            vp[x] = (tr[x] & trn[x]) if below else 0
        for x in range(w - 1):
            hp[x] = tr[x] & tr[x + 1]
        for j in range(nseg):
            ts = tr[segs[j]:segs[j + 1]]
            cnt = 0
            for x in range(ts.shape[0]):
                cnt += ts[x]
            binrow[j, K] += cnt
            nt += cnt
        for k in range(K):
            c = idx[k]
            pr = prob[c, y]
            prn = prob[c, y + 1] if below else prob[c, y]
            s = zero
            sq = zero
            sp = zero
            sqp = zero
            tv = zero
            nan = False
            npos = 0
            for j in range(nseg):
                ps = pr[segs[j]:segs[j + 1]]
                ts = tr[segs[j]:segs[j + 1]]
                cnt = 0
                for x in range(ps.shape[0]):
                    v = ps[x] + zero
                    nan |= v != v
                    t = ts[x]
                    pv = (v > thr) * t
                    vt = v * t
                    s += vt
                    sq += vt * v
                    vpos = v * pv
                    sp += vpos
                    sqp += vpos * v
                    cnt += pv
                binrow[j, k] += cnt
                npos += cnt
            for x in range(w - 1):
                tv += abs((pr[x + 1] + zero) - (pr[x] + zero)) * hp[x]
            if below:
                for x in range(w):
                    tv += abs((prn[x] + zero) - (pr[x] + zero)) * vp[x]
            has_nan |= nan
            rowpos[k] = npos
            if npos:
                pl = planes[k]
                for wd in range(nw):
                    word = np.uint64(0)
                    base = wd * 64
                    for b in range(min(64, w - base)):
                        v = pr[base + b] + zero
                        on = (v > thr) & (tr[base + b] != 0)
                        word |= np.uint64(on) << np.uint64(b)
                    pl[wd] = word
            sums[_POS, k] += npos
            sums[_SUM, k] += s
            sums[_SUMP, k] += sp
            sums[_SQ, k] += sq
            sums[_SQP, k] += sqp
            sums[_TV, k] += tv
        # co-occurrence: popcount of ANDed bit planes, K(K+1)/2 * w/64 POPCNTs per row
        # whatever the density (a per-pixel loop over set bits is quadratic in positives)
        for a in range(K):
            if rowpos[a] == 0:
                continue
            pa = planes[a]
            cooc[a, a] += rowpos[a]
            for b in range(a + 1, K):
                if rowpos[b] == 0:
                    continue
                pb = planes[b]
                cnt = 0
                for wd in range(nw):
                    cnt += _popcount(pa[wd] & pb[wd])
                cooc[a, b] += cnt
    return nt, has_nan


def _run_bands(prob, tissue, idx, thr, zero, y0, bin_px, segs, nby, nbx):
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
        ntis[b], nans[b] = _band(
            prob, tissue, idx, thr, zero, r0, r1, segs, sums[b], cooc[b], bins[b]
        )

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
    # column range of each bin: segs[j]..segs[j+1]
    inner = np.arange(bx0 + 1, bx0 + nbx, dtype=np.int64) * bin_px - x0
    segs = np.concatenate(([0], inner, [w])).astype(np.int64)
    K = len(idx)
    if h == 0 or w == 0:
        empty = TilePartials(0, np.zeros((N_SUMS, K)), np.zeros((K, K)),
                             np.zeros((0, 0, K + 1)), by0, bx0)
        return empty, False
    zero: np.int64 | np.float64
    thr: np.int64 | np.float64
    if prob.dtype == np.uint8:
        # integer path: value > t  <=>  value > floor(t) for integer values
        zero, thr = np.int64(0), np.int64(np.floor(thr_native))
    else:
        zero, thr = np.float64(0.0), np.float64(thr_native)
    nt, has_nan, sums, cooc, bins = _run_bands(
        prob, tissue, np.asarray(idx, np.int64), thr, zero, int(y0), int(bin_px), segs,
        int(nby), int(nbx)
    )
    return TilePartials(int(nt), sums, cooc, bins, by0, bx0), bool(has_nan)
