"""The tile probabilities the cells are segmented from (virtime.cells.collector)."""

from __future__ import annotations

import numpy as np


def test_tile_probabilities_against_a_per_pixel_blend(rng):
    """The blended tile the cells are segmented from: Σ w·σ(l) / Σ w over the windows that cover
    each pixel, computed pixel by pixel in float64 (independent of the vectorised one)."""
    from virtime.cells.collector import tile_probabilities

    tile, win = 32, 20
    origins = [(0, 0), (12, 0), (0, 12), (12, 12)]  # overlapping windows covering the tile
    weight = rng.uniform(0.1, 1.0, (win, win))
    logits = rng.normal(0.0, 3.0, (len(origins), 3, win, win)).astype(np.float32)
    got = tile_probabilities(logits, origins, weight, tile)
    want = np.zeros((3, tile, tile))
    for yy in range(tile):
        for xx in range(tile):
            num, den = np.zeros(3), 0.0
            for k, (x, y) in enumerate(origins):
                if x <= xx < x + win and y <= yy < y + win:
                    w = weight[yy - y, xx - x]
                    num += w / (1.0 + np.exp(-logits[k, :, yy - y, xx - x].astype(np.float64)))
                    den += w
            want[:, yy, xx] = num / den
    np.testing.assert_allclose(got, want, atol=1e-6)
    one = tile_probabilities(logits[:1], [(0, 0)], weight, win)  # one window: its sigmoid
    np.testing.assert_allclose(one, 1.0 / (1.0 + np.exp(-logits[0].astype(np.float64))), atol=1e-6)
