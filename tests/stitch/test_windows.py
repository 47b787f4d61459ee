"""Window planning, blend weights and pooling against hand-written numpy references."""

from __future__ import annotations

import numpy as np
import pytest

from virtime.errors import InvalidArgumentError
from virtime.stitch.windows import (
    output_factor,
    plan_windows,
    pool_weighted,
    ramp_1d,
    tile_stride,
    window_offsets,
    window_weight,
)


def test_official_layout_is_four_abutting_windows() -> None:
    assert plan_windows(512, 256, 0) == ((0, 0), (256, 0), (0, 256), (256, 256))
    assert tile_stride(512, 0) == 512
    assert np.all(window_weight(256, 0) == 1.0)


@pytest.mark.parametrize(
    "tile,window,overlap",
    [
        (512, 256, 16),
        (512, 256, 64),
        (512, 256, 128),
        (400, 256, 32),
        (256, 256, 32),
        (600, 128, 40),
    ],
)
def test_windows_cover_tile_and_overlap_at_least_overlap(tile, window, overlap) -> None:
    offs = window_offsets(tile, window, overlap)
    assert offs[0] == 0 and offs[-1] == tile - window
    covered = np.zeros(tile, bool)
    for o in offs:
        covered[o : o + window] = True
    assert covered.all()
    gaps = np.diff(offs)
    assert np.all(window - gaps >= overlap)  # neighbours overlap by at least `overlap`
    # and no more windows than needed: one fewer could not keep that overlap
    n = len(offs)
    if n > 1:
        assert (n - 2) * (window - overlap) < tile - window


@pytest.mark.parametrize("kind", ["cosine", "linear"])
@pytest.mark.parametrize("overlap", [1, 7, 64])
def test_ramp_is_complementary_positive_and_flat(kind, overlap) -> None:
    r = ramp_1d(256, overlap, kind).astype(np.float64)
    assert np.all(r > 0) and np.all(r <= 1)
    head = r[:overlap]
    np.testing.assert_allclose(head + head[::-1], 1.0, atol=1e-6)
    np.testing.assert_array_equal(r[overlap : 256 - overlap], 1.0)
    np.testing.assert_allclose(r[::-1], r, atol=0)  # symmetric
    t = np.arange(overlap) + 0.5
    expected = np.sin(np.pi * t / (2 * overlap)) ** 2 if kind == "cosine" else t / overlap
    np.testing.assert_allclose(head, expected, rtol=1e-6)


def test_tile_border_weights_are_a_partition_of_unity() -> None:
    """Across a tile border (windows overlapping by exactly `overlap`) weights sum to one."""
    overlap, tile, window = 64, 512, 256
    total = np.zeros(2 * tile)
    r = ramp_1d(window, overlap)
    for tx in (0, tile_stride(tile, overlap)):
        for o in window_offsets(tile, window, overlap):
            total[tx + o : tx + o + window] += r
    zone = slice(tile - overlap, tile)  # where tile 0's last and tile 1's first window meet
    np.testing.assert_allclose(total[zone], 1.0, atol=1e-6)
    w2 = window_weight(window, overlap)
    np.testing.assert_allclose(w2, np.outer(r, r), rtol=1e-6)


def test_bad_geometry_is_rejected() -> None:
    with pytest.raises(InvalidArgumentError):
        plan_windows(512, 256, 200)  # more than half a window
    with pytest.raises(InvalidArgumentError):
        plan_windows(128, 256, 0)
    with pytest.raises(InvalidArgumentError):
        ramp_1d(256, 8, "gauss")  # type: ignore[arg-type]


def test_output_factor() -> None:
    assert output_factor(0.25, 2.0) == 8
    assert output_factor(0.25, 0.25) == 1
    assert output_factor(0.5, 1.5) == 3
    for bad in ((0.25, 0.6), (0.25, 0.1), (0.0, 2.0)):
        with pytest.raises(InvalidArgumentError):
            output_factor(*bad)


@pytest.mark.parametrize("x,y", [(0, 0), (16, 8), (3, 13), (-5, 7)])
def test_pool_weighted_matches_full_resolution_block_sums(rng, x, y) -> None:
    f, c, h, w = 8, 3, 40, 56
    probs = rng.random((c, h, w), dtype=np.float32)
    weight = rng.random((h, w), dtype=np.float32) + 0.1
    wp, ws, ox, oy = pool_weighted(probs, weight, f, x, y)
    # Reference: paint into a full-resolution grid anchored at a multiple of f, then block-sum.
    gx0, gy0 = (x // f) * f, (y // f) * f
    grid_h = -(-(y + h - gy0) // f) * f
    grid_w = -(-(x + w - gx0) // f) * f
    full = np.zeros((c, grid_h, grid_w))
    fw = np.zeros((grid_h, grid_w))
    full[:, y - gy0 : y - gy0 + h, x - gx0 : x - gx0 + w] = probs * weight.astype(np.float64)
    fw[y - gy0 : y - gy0 + h, x - gx0 : x - gx0 + w] = weight
    ref = full.reshape(c, grid_h // f, f, grid_w // f, f).sum(axis=(2, 4))
    refw = fw.reshape(grid_h // f, f, grid_w // f, f).sum(axis=(1, 3))
    assert (ox, oy) == (gx0 // f, gy0 // f)
    np.testing.assert_allclose(wp, ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ws, refw, rtol=1e-5, atol=1e-5)
