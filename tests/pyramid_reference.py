"""An independent OME-Zarr pyramid for the tests: plain numpy, from the finished level 0."""

from __future__ import annotations

import numpy as np


def reference_pyramid(level0: np.ndarray, n_levels: int) -> list[np.ndarray]:
    """Each level the mean of the pixels present in each 2x2 block of the one above, rounded
    half up (an odd edge averages the pixels it has), as the NGFF metadata says."""
    levels = [np.asarray(level0)]
    for _ in range(n_levels - 1):
        a = levels[-1].astype(np.float64)
        c, h, w = a.shape
        a = np.pad(a, ((0, 0), (0, h % 2), (0, w % 2)), constant_values=np.nan)
        blocks = a.reshape(c, a.shape[1] // 2, 2, a.shape[2] // 2, 2)
        levels.append(np.floor(np.nanmean(blocks, axis=(2, 4)) + 0.5).astype(np.uint8))
    return levels
