"""The C++ post-processing (sigmoid, blend weight, pooling, blended tile statistics) against
numpy/scipy references written here."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit
from window_reference import ramp_weight

from virtime import _core
from virtime.errors import InvalidArgumentError
from virtime.translation.postprocess import WindowPostprocessor


# ----------------------------------------------------------------------------- references
def ref_pool(logits: np.ndarray, weight: np.ndarray, f: int) -> tuple[np.ndarray, np.ndarray]:
    """Block sums of weight * expit(logits) and of weight, in float64."""
    n, c, h, w = logits.shape
    wp = expit(logits.astype(np.float64)) * weight
    wp = wp.reshape(n, c, h // f, f, w // f, f).sum(axis=(3, 5))
    ws = weight.astype(np.float64).reshape(h // f, f, w // f, f).sum(axis=(1, 3))
    return wp, ws


def ref_tile_stats(logits, weight, origins, tile, core, thr=0.5):
    """Blended map Σ w·p / Σ w per tile in float64, then count > thr and sum over core x core."""
    k = len(origins)
    n, c = logits.shape[0] // k, logits.shape[1]
    h, w = weight.shape
    pos = np.zeros((n, c), np.int64)
    psum = np.zeros((n, c))
    for i in range(n):
        acc = np.zeros((c, tile, tile))
        wsum = np.zeros((tile, tile))
        for j, (x, y) in enumerate(origins):
            acc[:, y : y + h, x : x + w] += expit(logits[i * k + j].astype(np.float64)) * weight
            wsum[y : y + h, x : x + w] += weight
        blend = (acc / np.maximum(wsum, 1e-12))[:, :core, :core]
        pos[i] = (blend > thr).sum(axis=(1, 2))
        psum[i] = blend.sum(axis=(1, 2))
    return pos, psum


def grid_origins(tile: int, window: int, step: int) -> list[tuple[int, int]]:
    offs = list(range(0, tile - window + 1, step))
    return [(x, y) for y in offs for x in offs]


# ----------------------------------------------------------------------------- CPU twins
def pool_one_window_per_tile(logits, weight, f):
    """The fused pass's pooled sums, each window its own tile (origin (0, 0); stats unused)."""
    h, w = weight.shape
    origin = np.array([[0, 0]])
    wp, ws, _, _ = _core.postprocess_tiles(logits, weight, f, origin, max(h, w), 1, 0.5, 2)
    return wp, ws


@pytest.mark.parametrize(
    ("n", "c", "h", "w", "f", "overlap"),
    [(3, 23, 64, 64, 8, 0), (2, 5, 48, 80, 4, 12), (1, 1, 16, 16, 1, 4), (4, 7, 30, 18, 3, 6),
     (0, 4, 16, 16, 4, 0)],
)
def test_sigmoid_pool_matches_reference(rng, n, c, h, w, f, overlap):
    logits = rng.normal(0.0, 4.0, (n, c, h, w)).astype(np.float32)
    r = ramp_weight(max(h, w), overlap)[:h, :w].copy()
    wp, ws = pool_one_window_per_tile(logits, r, f)
    want_wp, want_ws = ref_pool(logits, r, f)
    assert wp.shape == (n, c, h // f, w // f) and wp.dtype == np.float32
    np.testing.assert_allclose(wp, want_wp, rtol=2e-6, atol=1e-6 * f * f)
    np.testing.assert_allclose(ws, want_ws, rtol=1e-6)


def test_sigmoid_extreme_logits(rng):
    logits = np.array([-1e30, -200, -87.5, -20, -1e-3, 0, 1e-7, 3, 50, 1e30, np.inf, -np.inf],
                      np.float32).reshape(1, 1, 1, 12)
    wp, _ = pool_one_window_per_tile(logits, np.ones((1, 12), np.float32), 1)
    np.testing.assert_allclose(wp.ravel(), expit(logits.astype(np.float64)).ravel(),
                               rtol=3e-7, atol=1e-37)
    nan = pool_one_window_per_tile(np.full((1, 1, 1, 1), np.nan, np.float32),
                                   np.ones((1, 1), np.float32), 1)[0]
    assert np.isnan(nan).all()


@pytest.mark.parametrize(
    ("tile", "window", "step", "core", "overlap", "c"),
    [(128, 64, 64, 128, 0, 23), (128, 64, 32, 112, 16, 6), (96, 48, 24, 80, 12, 3),
     (40, 40, 40, 33, 0, 4)],
)
def test_tile_stats_match_blended_reference(rng, tile, window, step, core, overlap, c):
    origins = grid_origins(tile, window, step)
    n = 3
    logits = rng.normal(0.0, 2.0, (n * len(origins), c, window, window)).astype(np.float32)
    weight = ramp_weight(window, overlap)
    pos, psum = _core.tile_stats(logits, weight, np.array(origins), tile, core, 0.5, 2)
    want_pos, want_psum = ref_tile_stats(logits, weight, origins, tile, core)
    # float32 vs float64 blends can flip a pixel sitting within rounding of the threshold.
    assert np.abs(pos - want_pos).max() <= 2
    np.testing.assert_allclose(psum, want_psum, rtol=1e-5)


def test_tile_stats_other_threshold(rng):
    origins = grid_origins(64, 32, 32)
    logits = rng.normal(0.0, 2.0, (2 * len(origins), 3, 32, 32)).astype(np.float32)
    weight = np.ones((32, 32), np.float32)
    pos, _ = _core.tile_stats(logits, weight, np.array(origins), 64, 64, 0.8)
    want, _ = ref_tile_stats(logits, weight, origins, 64, 64, thr=0.8)
    assert np.abs(pos - want).max() <= 1


def test_fused_pass_equals_separate_calls(rng):
    origins = grid_origins(96, 48, 24)
    logits = rng.normal(0.0, 3.0, (2 * len(origins), 5, 48, 48)).astype(np.float32)
    weight = ramp_weight(48, 12)
    _, _, pos, psum = _core.postprocess_tiles(logits, weight, 4, np.array(origins), 96, 72, 0.5, 2)
    pos2, psum2 = _core.tile_stats(logits, weight, np.array(origins), 96, 72, 0.5, 1)
    np.testing.assert_array_equal(pos, pos2)  # same arithmetic in the same order, any thread count
    np.testing.assert_array_equal(psum, psum2)


def test_window_postprocessor_numpy(rng):
    origins = grid_origins(64, 32, 16)
    weight = ramp_weight(32, 8)
    post = WindowPostprocessor(weight, 4, origins, 64, 48, threads=2)
    logits = rng.normal(0.0, 2.0, (2 * len(origins), 4, 32, 32)).astype(np.float16)  # cast inside
    res = post.process(logits)
    want_wp, want_ws = ref_pool(logits.astype(np.float32), weight, 4)
    assert res.wp.shape == (2, len(origins), 4, 8, 8)
    np.testing.assert_allclose(res.wp.reshape(want_wp.shape), want_wp, rtol=2e-6, atol=2e-5)
    np.testing.assert_allclose(res.ws, want_ws, rtol=1e-6)
    want_pos, want_psum = ref_tile_stats(logits.astype(np.float32), weight, origins, 64, 48)
    assert np.abs(res.positive_fraction * 48**2 - want_pos).max() <= 2
    np.testing.assert_allclose(res.mean_probability, want_psum / 48**2, rtol=1e-5)
    assert post.aligned(8, 16) and not post.aligned(6, 16)
    odd = WindowPostprocessor(weight, 5, origins, 64, 48)  # 32 is not a multiple of 5
    assert not odd.can_pool and odd.process(logits).wp is None


@pytest.mark.parametrize(
    "call",
    [
        lambda: _core.postprocess_tiles(np.zeros((1, 2, 12, 12), np.float32),
                                        np.ones((12, 12), np.float32), 5, [[0, 0]], 12, 12),
        lambda: _core.postprocess_tiles(np.zeros((1, 2, 12, 12), np.float32),
                                        np.ones((12, 10), np.float32), 4, [[0, 0]], 12, 12),
        lambda: _core.tile_stats(np.zeros((3, 2, 8, 8), np.float32), np.ones((8, 8), np.float32),
                                 np.array([[0, 0], [8, 0]]), 16, 16),
        lambda: _core.tile_stats(np.zeros((2, 2, 8, 8), np.float32), np.ones((8, 8), np.float32),
                                 np.array([[0, 0], [12, 0]]), 16, 16),
        lambda: _core.tile_stats(np.zeros((1, 2, 8, 8), np.float32), np.ones((8, 8), np.float32),
                                 np.array([[0, 0]]), 16, 0),
        lambda: WindowPostprocessor(np.ones((8, 8)), 2, [(0, 0), (9, 0)], 16, 16),
    ],
)
def test_bad_arguments_raise(call):
    with pytest.raises(InvalidArgumentError):
        call()

