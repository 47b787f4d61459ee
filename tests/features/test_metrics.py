"""The numba tile kernel against a plain-numpy reference of the same partial sums."""

from __future__ import annotations

import numpy as np
import pytest

from virtime.features.metrics import tile_partials

SHAPES = [(1, 1), (1, 7), (7, 1), (13, 29), (64, 64), (65, 97)]


def _check(prob, tissue, idx, thr, y0, x0, bin_px, ref):
    got, has_nan = tile_partials(prob, tissue, idx, thr, y0, x0, bin_px)
    n, sums, cooc, bins = ref.ref_partials(prob, tissue, idx, thr, y0, x0, bin_px)
    assert not has_nan
    assert got.n_tissue == n
    np.testing.assert_allclose(got.sums, sums, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(got.cooc, cooc, rtol=1e-6, atol=0)
    assert got.bins.shape == bins.shape
    np.testing.assert_array_equal(got.bins, bins)
    assert (got.by0, got.bx0) == (y0 // bin_px, x0 // bin_px)


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
@pytest.mark.parametrize("shape", SHAPES)
def test_kernel_matches_numpy_random(rng, ref, dtype, shape):
    h, w = shape
    C = 6
    if dtype == np.uint8:
        prob = rng.integers(0, 256, (C, h, w), dtype=np.uint8)
        thr = 127.5
    else:
        prob = rng.random((C, h, w), dtype=np.float32)
        thr = 0.5
    tissue = rng.random((h, w)) > 0.3
    idx = np.array([0, 2, 3, 5], dtype=np.int64)
    y0, x0 = int(rng.integers(0, 50)), int(rng.integers(0, 50))
    _check(prob, tissue, idx, thr, y0, x0, 8, ref)


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_kernel_edge_cases(rng, ref, dtype):
    h, w, C = 23, 31, 5
    idx = np.arange(C, dtype=np.int64)
    thr = 127.5 if dtype == np.uint8 else 0.5
    hi = 255 if dtype == np.uint8 else 1.0
    full = np.ones((h, w), bool)
    # empty tissue
    prob = (rng.random((C, h, w)) * hi).astype(dtype)
    _check(prob, np.zeros((h, w), bool), idx, thr, 3, 4, 5, ref)
    # all positive
    _check(np.full((C, h, w), hi, dtype), full, idx, thr, 0, 0, 5, ref)
    # constant maps, never positive
    _check(np.full((C, h, w), hi * 0.2, dtype), full, idx, thr, 10, 0, 7, ref)
    # one bin bigger than the tile
    _check(prob, full, idx, thr, 0, 0, 1000, ref)


def test_uint8_threshold_boundary():
    prob = np.array([[[127, 128, 255, 0]]], dtype=np.uint8)
    part, _ = tile_partials(prob, np.ones((1, 4), bool), np.array([0]), 127.5, 0, 0, 4)
    assert part.sums[0, 0] == 2  # 128 and 255 are positive at threshold 0.5


def test_kernel_flags_nan(rng):
    prob = rng.random((3, 9, 9), dtype=np.float32)
    prob[1, 4, 4] = np.nan
    _, has_nan = tile_partials(prob, np.ones((9, 9), bool), np.array([0, 1]), 0.5, 0, 0, 4)
    assert has_nan
    _, has_nan = tile_partials(prob, np.ones((9, 9), bool), np.array([0, 2]), 0.5, 0, 0, 4)
    assert not has_nan  # NaN only in a channel that is not analysed


def test_kernel_32_channels_and_long_rows(rng, ref):
    """32 analysed channels (every bit of the mask) and rows spanning several 64-bit words."""
    prob = rng.integers(0, 256, (33, 9, 200), dtype=np.uint8)
    tissue = rng.random((9, 200)) > 0.1
    idx = np.arange(1, 33, dtype=np.int64)
    _check(prob, tissue, idx, 127.5, 2, 61, 16, ref)


def test_thread_count_does_not_change_results(rng):
    import numba

    prob = rng.random((4, 70, 90), dtype=np.float32)
    tissue = rng.random((70, 90)) > 0.2
    idx = np.arange(4, dtype=np.int64)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one, _ = tile_partials(prob, tissue, idx, 0.5, 0, 0, 8)
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        many, _ = tile_partials(prob, tissue, idx, 0.5, 0, 0, 8)
    finally:
        numba.set_num_threads(before)
    np.testing.assert_array_equal(one.sums, many.sums)
    np.testing.assert_array_equal(one.cooc, many.cooc)
    np.testing.assert_array_equal(one.bins, many.bins)
