"""Split model tiles into model windows, the windows' blend weights, and pooling to the canvas grid.

GigaTIME runs on 256x256 windows; the pipeline reads 512x512 tiles at the model's 0.25 µm/px.
With ``overlap == 0`` a tile holds the four non-overlapping windows and tiles abut: the official
layout, blended with uniform weights (so reproduced exactly). With ``overlap > 0`` tiles are laid
on a grid of stride ``tile_size - overlap``, windows inside a tile are spread evenly so that
neighbours overlap by at least ``overlap``, and each window carries a separable ramp that falls
towards its edges over ``overlap`` pixels, where a zero-padded CNN is least reliable. The ramp
satisfies ``r(t) + r(overlap - 1 - t) = 1``, so where two windows overlap by exactly ``overlap``
(across every tile border) the weights sum to one; elsewhere the canvas divides by the summed
weight, so slide borders and tissue edges (no neighbour) are exact too.

Pooling: the canvas lives at ``factor`` x coarser resolution. A window contributes, per output
pixel, the *sums* ``Σ w·p`` and ``Σ w`` over the ``factor x factor`` model pixels it covers; the
canvas value is the ratio of the accumulated sums. See :func:`pool_weighted` (one window at any
origin, on the block sums of :mod:`virtime.stitch.window_geometry`).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from virtime.errors import InvalidArgumentError
from virtime.stitch.window_geometry import pool_blocks

__all__ = [
    "output_factor",
    "plan_windows",
    "pool_weighted",
    "ramp_1d",
    "tile_stride",
    "window_offsets",
    "window_weight",
]

RampKind = Literal["cosine", "linear"]


def _check_geometry(tile_size: int, window: int, overlap: int) -> None:
    if window <= 0 or tile_size < window:
        raise InvalidArgumentError(
            f"window ({window}) must be positive and no larger than the tile ({tile_size})"
        )
    if overlap < 0 or 2 * overlap > window:
        raise InvalidArgumentError(
            f"overlap must be between 0 and window/2 = {window // 2} pixels, got {overlap}"
        )


def window_offsets(tile_size: int = 512, window: int = 256, overlap: int = 0) -> tuple[int, ...]:
    """1-D offsets of the windows inside a tile, evenly spread, first 0 and last ``tile - window``.

    The count is the smallest ``n`` with ``(n - 1)(window - overlap) >= tile - window``, so
    neighbouring windows overlap by at least ``overlap`` (by exactly 0 in the official layout).
    """
    _check_geometry(tile_size, window, overlap)
    span = tile_size - window
    if span == 0:
        return (0,)
    n = 1 + math.ceil(span / (window - overlap))
    return tuple(round(i * span / (n - 1)) for i in range(n))


def plan_windows(
    tile_size: int = 512, window: int = 256, overlap: int = 0
) -> tuple[tuple[int, int], ...]:
    """Window origins ``(x, y)`` inside a tile, row-major.

    ``plan_windows(512, 256, 0)`` is the official layout ``(0,0), (256,0), (0,256), (256,256)``.
    """
    offs = window_offsets(tile_size, window, overlap)
    return tuple((x, y) for y in offs for x in offs)


def tile_stride(tile_size: int = 512, overlap: int = 0) -> int:
    """Step of the tile grid: tiles overlap by ``overlap`` pixels (abut when it is 0)."""
    if overlap < 0 or overlap >= tile_size:
        raise InvalidArgumentError(f"overlap must be in [0, {tile_size}), got {overlap}")
    return tile_size - overlap


def ramp_1d(length: int, overlap: int, kind: RampKind = "cosine") -> NDArray[np.float32]:
    """1-D weight: rises over the first ``overlap`` pixels, 1 in the middle, falls at the end.

    ``cosine``: ``r(t) = sin²(π (t + ½) / (2·overlap))``; ``linear``: ``r(t) = (t + ½) / overlap``.
    Both are strictly positive (so a pixel covered by one window only keeps its value after
    normalisation) and complementary, ``r(t) + r(overlap-1-t) = 1``. ``overlap == 0`` gives ones.
    """
    if overlap < 0 or 2 * overlap > length:
        raise InvalidArgumentError(f"overlap must be in [0, {length // 2}], got {overlap}")
    w = np.ones(length, dtype=np.float64)
    if overlap > 0:
        t = np.arange(overlap, dtype=np.float64) + 0.5
        if kind == "cosine":
            r = np.sin(np.pi * t / (2 * overlap)) ** 2
        elif kind == "linear":
            r = t / overlap
        else:
            raise InvalidArgumentError(f"unknown ramp kind {kind!r}; use 'cosine' or 'linear'")
        w[:overlap] = r
        w[length - overlap :] = np.minimum(w[length - overlap :], r[::-1])
    return w.astype(np.float32)


def window_weight(
    window: int = 256, overlap: int = 0, kind: RampKind = "cosine"
) -> NDArray[np.float32]:
    """Separable blend weight ``(window, window)``: outer product of :func:`ramp_1d` with itself."""
    r = ramp_1d(window, overlap, kind)
    return np.outer(r, r).astype(np.float32)


def output_factor(model_mpp: float, output_mpp: float) -> int:
    """Integer pooling factor ``output_mpp / model_mpp`` (8 for 0.25 -> 2 µm/px).

    The canvas pools by whole pixel blocks; a non-integral ratio is refused rather than resampled.
    """
    if not (model_mpp > 0 and output_mpp > 0 and math.isfinite(model_mpp * output_mpp)):
        raise InvalidArgumentError(f"mpp must be positive, got {model_mpp} and {output_mpp}")
    ratio = output_mpp / model_mpp
    factor = round(ratio)
    if factor < 1 or abs(ratio - factor) > 1e-6 * ratio:
        raise InvalidArgumentError(
            f"--output-mpp {output_mpp} must be an integer multiple (>= 1) of the model's "
            f"{model_mpp} µm/px (ratio {ratio:.6g})"
        )
    return factor


def pool_weighted(
    probs: NDArray[Any], weight: NDArray[Any], factor: int, x: int = 0, y: int = 0
) -> tuple[NDArray[np.float32], NDArray[np.float32], int, int]:
    """Block sums of ``weight·probs`` and of ``weight`` on the canvas grid.

    ``probs`` is ``(C, h, w)`` at model resolution with origin ``(x, y)`` in model pixels;
    output pixel ``(i, j)`` covers model pixels ``[i·f, (i+1)·f) x [j·f, (j+1)·f)``. A window that
    is not aligned to that grid is zero-padded (zero weight) to it, so partial blocks are exact.

    Returns
    -------
    wp, w, ox, oy
        ``wp`` ``(C, h', w')`` and ``w`` ``(h', w')`` float32 sums, and the output-grid origin.
    """
    probs = np.asarray(probs)
    weight = np.asarray(weight, dtype=np.float32)
    if probs.ndim != 3 or weight.shape != probs.shape[1:]:
        raise InvalidArgumentError(
            f"probs must be (C, h, w) and weight (h, w); got {probs.shape} and {weight.shape}"
        )
    f = int(factor)
    if f < 1:
        raise InvalidArgumentError(f"factor must be >= 1, got {factor}")
    wp = probs.astype(np.float32, copy=False) * weight
    if f == 1:
        return wp, weight.copy(), int(x), int(y)
    ox, oy = x // f, y // f
    px, py = x - ox * f, y - oy * f
    return pool_blocks(wp, f, px, py), pool_blocks(weight, f, px, py), int(ox), int(oy)
