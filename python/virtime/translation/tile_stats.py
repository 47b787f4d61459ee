"""Per-tile statistics at full model resolution, before the canvas is downsampled.

For each tile: the blended probability map of its windows (Σ w·p / Σ w inside the tile), then,
over the tile's own region (its first ``stride`` rows and columns, so overlapping tiles partition
the slide), the positive fraction (probability > 0.5) and the mean probability of every channel.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["blend_tile", "tile_channel_stats"]


def blend_tile(
    window_probs: np.ndarray, origins: Sequence[tuple[int, int]], weight: np.ndarray, tile_size: int
) -> np.ndarray:
    """(C, T, T) blend of one tile's windows ``(k, C, w, w)`` placed at ``origins`` (x, y)."""
    k, c, wh, ww = window_probs.shape
    acc = np.zeros((c, tile_size, tile_size), np.float32)
    wsum = np.zeros((tile_size, tile_size), np.float32)
    for (x, y), probs in zip(origins, window_probs):
        acc[:, y : y + wh, x : x + ww] += probs * weight
        wsum[y : y + wh, x : x + ww] += weight
    return acc / np.maximum(wsum, np.float32(1e-12))


def tile_channel_stats(tile_probs: np.ndarray, core: int, threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """(positive fraction, mean probability) per channel over the tile's ``core x core`` region."""
    region = tile_probs[:, :core, :core].reshape(tile_probs.shape[0], -1)
    return (region > threshold).mean(axis=1), region.mean(axis=1)
