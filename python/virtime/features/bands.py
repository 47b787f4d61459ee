"""Slide features accumulated from a canvas's bands as they are written (a band observer).

A translation used to compute its slide features after the canvas was finished, by reading the
whole level 0 back from disk. :class:`BandFeatures` is attached to the
:class:`~virtime.stitch.canvas.StreamingCanvas` instead and feeds each uint8 band, once, to a
:class:`~virtime.features.partials.SlideFeatureAccumulator` on the canvas's writer thread. For
uint8 maps the accumulator's partial sums are integers, so the result equals
:func:`~virtime.features.table.compute_slide_features` over the stored map bit for bit.

The tissue of a band is taken on the tile loop's thread when the band is flushed
(:meth:`BandFeatures.prepare`): at that point every tile that reaches the band has finished or
failed, so the tissue left without a prediction is known. Each band's tissue is recorded as a
digest; :meth:`BandFeatures.matches` tells the translation whether the final tissue mask is the
one the features were computed with (if not, it recomputes them from the stored map).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from virtime.features.partials import SlideFeatureAccumulator

__all__ = ["BandFeatures", "column_blocks", "tissue_digest"]


def column_blocks(n_channels: int, rows: int, width: int, itemsize: int, bin_px: int,
                  max_block_bytes: int) -> list[tuple[int, int]]:
    """Column ranges of whole bins with at most ``max_block_bytes`` of map each (at least one bin)."""
    step = max(1, max_block_bytes // max(1, n_channels * rows * itemsize) // bin_px) * bin_px
    return [(c0, min(width, c0 + step)) for c0 in range(0, width, step)]


def tissue_digest(tissue: NDArray[Any]) -> bytes:
    """A short digest of a boolean mask (shape included)."""
    mask = np.ascontiguousarray(np.asarray(tissue) != 0)
    h = hashlib.blake2b(digest_size=16)
    h.update(np.asarray(mask.shape, np.int64).tobytes())
    h.update(np.packbits(mask).tobytes())
    return h.digest()


class BandFeatures:
    """Observer: slide features of the canvas's uint8 bands.

    ``tissue_rows(y0, y1)`` returns the tissue mask of canvas rows ``y0 .. y1`` (bool
    ``(y1 - y0, W)``); it is called on the thread that flushes the canvas. The other arguments
    are those of :class:`~virtime.features.partials.SlideFeatureAccumulator`.
    """

    def __init__(self, mpp: float, channels: Sequence[str],
                 tissue_rows: Callable[[int, int], NDArray[np.bool_]], *, bin_um: float = 64.0,
                 threshold: float = 0.5, max_block_bytes: int = 256 * 2**20) -> None:
        self.accumulator = SlideFeatureAccumulator(mpp, bin_um=bin_um, threshold=threshold,
                                                   channels=channels)
        self._tissue_rows = tissue_rows
        self._max_block_bytes = int(max_block_bytes)
        self._digests: dict[int, bytes] = {}

    def prepare(self, y0: int, y1: int) -> NDArray[np.bool_]:
        return np.asarray(self._tissue_rows(y0, y1), dtype=bool)

    def on_band(self, y0: int, rows: NDArray[np.uint8], tissue: NDArray[np.bool_]) -> None:
        c, n, w = rows.shape
        for c0, c1 in column_blocks(c, n, w, rows.dtype.itemsize, self.accumulator.bin_px,
                                    self._max_block_bytes):
            self.accumulator.add_tile(rows[:, :, c0:c1], tissue[:, c0:c1], y0, c0)
        self._digests[int(y0)] = tissue_digest(tissue)

    def matches(self, tissue: NDArray[Any], band_rows: int) -> bool:
        """Whether the features were computed with exactly ``tissue`` (the whole canvas mask,
        in bands of ``band_rows`` rows), every band included."""
        h = tissue.shape[0]
        starts = range(0, h, band_rows)
        if set(self._digests) != set(starts):
            return False
        return all(self._digests[y0] == tissue_digest(tissue[y0 : y0 + band_rows])
                   for y0 in starts)

    def result(self) -> dict[str, float | str]:
        """The features (see :meth:`SlideFeatureAccumulator.result`)."""
        return self.accumulator.result()
