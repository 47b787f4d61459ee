"""Exact Euclidean distance and feature transforms in numba (Felzenszwalb & Huttenlocher 2012).

Two separable passes: per column the distance to the nearest feature pixel along y, then per row
the lower envelope of the parabolas ``f(q) + (x - q)²``. Returns squared distances and, for the
feature transform, the nearest feature pixel: the same result as
``scipy.ndimage.distance_transform_edt`` (up to ties), several times faster on our tile sizes.
"""

from __future__ import annotations

import numba
import numpy as np
from numpy.typing import NDArray

__all__ = ["edt", "nearest_label"]

_INF = 1e30


@numba.njit(cache=True, nogil=True)
def _transform(feature, want_index):
    h, w = feature.shape
    g = np.empty((h, w), np.float64)
    gy = np.empty((h, w) if want_index else (1, 1), np.int32)
    for x in range(w):  # column pass: nearest feature along y
        last = -1
        for y in range(h):
            if feature[y, x]:
                last = y
            if last >= 0:
                g[y, x] = y - last
                if want_index:
                    gy[y, x] = last
            else:
                g[y, x] = _INF
        last = -1
        for y in range(h - 1, -1, -1):
            if feature[y, x]:
                last = y
            if last >= 0 and (g[y, x] >= _INF or last - y < g[y, x]):
                g[y, x] = last - y
                if want_index:
                    gy[y, x] = last
    for y in range(h):
        for x in range(w):
            if g[y, x] < _INF:
                g[y, x] = g[y, x] * g[y, x]
    out = np.empty((h, w), np.float32)
    iy = np.empty((h, w) if want_index else (1, 1), np.int32)
    ix = np.empty((h, w) if want_index else (1, 1), np.int32)
    v = np.empty(w, np.int64)
    z = np.empty(w + 1, np.float64)
    for y in range(h):  # row pass: lower envelope of parabolas
        k = -1
        for q in range(w):
            fq = g[y, q]
            if fq >= _INF:
                continue
            if k < 0:
                k = 0
                v[0] = q
                z[0] = -_INF
                z[1] = _INF
                continue
            s = ((fq + q * q) - (g[y, v[k]] + v[k] * v[k])) / (2.0 * (q - v[k]))
            while s <= z[k]:
                k -= 1
                s = ((fq + q * q) - (g[y, v[k]] + v[k] * v[k])) / (2.0 * (q - v[k]))
            k += 1
            v[k] = q
            z[k] = s
            z[k + 1] = _INF
        if k < 0:
            for x in range(w):
                out[y, x] = _INF
                if want_index:
                    iy[y, x] = -1
                    ix[y, x] = -1
            continue
        j = 0
        for x in range(w):
            while z[j + 1] < x:
                j += 1
            q = v[j]
            out[y, x] = (x - q) * (x - q) + g[y, q]
            if want_index:
                iy[y, x] = gy[y, q]
                ix[y, x] = q
    return out, iy, ix


def edt(mask: NDArray[np.bool_]) -> NDArray[np.float32]:
    """Distance of every True pixel to the nearest False pixel (0 on False), in pixels.

    As in scipy, pixels beyond the array are not background.
    """
    d2, _, _ = _transform(np.ascontiguousarray(~np.asarray(mask, bool)), False)
    return np.sqrt(d2)


@numba.njit(cache=True, nogil=True)
def _grow(labels, d2, iy, ix, r2):
    h, w = labels.shape
    out = np.zeros((h, w), np.int32)
    for y in range(h):
        for x in range(w):
            if d2[y, x] <= r2 and iy[y, x] >= 0:
                out[y, x] = labels[iy[y, x], ix[y, x]]
    return out


def nearest_label(labels: NDArray[np.integer], radius: float) -> NDArray[np.int32]:
    """Labels grown by ``radius`` pixels: each pixel takes its nearest labelled pixel's label."""
    labels = np.ascontiguousarray(labels, np.int32)
    d2, iy, ix = _transform(labels > 0, True)
    return _grow(labels, d2, iy, ix, float(radius) ** 2)
