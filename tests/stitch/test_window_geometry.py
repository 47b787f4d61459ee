"""WindowGeometry's numpy and torch backends against each other and against plain float64 loops
written here (blending of overlapping windows, pooling at every grid phase), and the one
window-geometry check behind every entry point."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from window_reference import ramp_weight

from virtime.errors import InvalidArgumentError
from virtime.stitch.window_geometry import WindowGeometry

# (tile, window, step, overlap ramp, factor): official abutting layout, overlapping windows with
# a ramp, windows that do not reach the far edge, a factor that does not divide the window.
GEOMETRIES = [(64, 32, 32, 0, 4), (64, 32, 16, 8, 4), (60, 24, 16, 6, 3), (48, 20, 14, 5, 8)]


@pytest.fixture(autouse=True)
def _one_torch_thread(one_torch_thread):
    """One intra-op thread: on a shared 2-core runner, torch's default oversubscribes."""




def _origins(tile: int, window: int, step: int) -> list[tuple[int, int]]:
    offs = list(range(0, tile - window + 1, step))
    return [(x, y) for y in offs for x in offs]


def _ref_blend(probs: np.ndarray, weight: np.ndarray, origins, tile: int) -> np.ndarray:
    """Per-tile float64 ``Σ w·p / Σ w`` (0 where no window reaches), pixel sums by slicing."""
    n, k, c, h, w = probs.shape
    out = np.zeros((n, c, tile, tile))
    for i in range(n):
        acc = np.zeros((c, tile, tile))
        ws = np.zeros((tile, tile))
        for j, (x, y) in enumerate(origins):
            acc[:, y : y + h, x : x + w] += probs[i, j].astype(np.float64) * weight
            ws[y : y + h, x : x + w] += weight
        out[i] = np.where(ws > 0, acc / np.where(ws > 0, ws, 1.0), 0.0)
    return out


def _ref_pool(values: np.ndarray, f: int, x: int, y: int) -> tuple[np.ndarray, int, int]:
    """Block sums of ``values`` ``(C, h, w)`` placed at model pixel ``(x, y)``: every pixel added
    to canvas pixel ``(gy // f, gx // f)`` one by one; returns the sums and the canvas origin."""
    c, h, w = values.shape
    gy, gx = np.mgrid[y : y + h, x : x + w]
    oy, ox = y // f, x // f
    out = np.zeros((c, (y + h - 1) // f - oy + 1, (x + w - 1) // f - ox + 1))
    for ch in range(c):
        np.add.at(out[ch], (gy // f - oy, gx // f - ox), values[ch].astype(np.float64))
    return out, ox, oy


@pytest.mark.parametrize(("tile", "window", "step", "overlap", "factor"), GEOMETRIES)
def test_numpy_and_torch_blend_equal_the_reference(rng, tile, window, step, overlap, factor):
    origins = _origins(tile, window, step)
    weight = ramp_weight(window, overlap)
    core = tile - overlap if overlap else tile
    g = WindowGeometry(weight, factor, origins, tile, core)
    probs = rng.random((3, len(origins), 5, window, window), dtype=np.float32)
    want = _ref_blend(probs, weight, origins, tile)
    np_ops, th_ops = g.numpy(), g.torch("cpu")
    weighted_np = np_ops.weigh(probs)
    weighted_th = th_ops.weigh(torch.from_numpy(probs.copy()))
    np.testing.assert_array_equal(weighted_th.numpy(), weighted_np)
    for size in (tile, core):
        a = np_ops.blend(weighted_np, size=size)
        b = th_ops.blend(weighted_th, size=size).numpy()
        assert a.shape == b.shape == (3, 5, size, size) and a.dtype == b.dtype == np.float32
        np.testing.assert_allclose(a, want[:, :, :size, :size], rtol=2e-6, atol=1e-7)
        np.testing.assert_array_equal(a, b)  # same float32 additions in the same order
    if overlap == 0 and step == window:  # uniform, abutting: each pixel is one window's value
        laid = probs.reshape(3, tile // window, tile // window, 5, window, window)
        laid = laid.transpose(0, 3, 1, 4, 2, 5).reshape(3, 5, tile, tile)
        np.testing.assert_array_equal(th_ops.blend(weighted_th).numpy(), laid)
    uncovered = _ref_blend(np.ones_like(probs[:1]), weight, origins, tile)[0, 0] == 0
    assert (np_ops.blend(weighted_np)[:, :, uncovered] == 0).all()  # pixels no window reaches


@pytest.mark.parametrize(("tile", "window", "step", "overlap", "factor"), GEOMETRIES)
def test_numpy_and_torch_pooling_equal_the_reference(rng, tile, window, step, overlap, factor):
    weight = ramp_weight(window, overlap)
    g = WindowGeometry(weight, factor, _origins(tile, window, step), tile, tile)
    np_ops, th_ops = g.numpy(), g.torch("cpu")
    probs = rng.random((4, 3, window, window), dtype=np.float32)
    weighted = np_ops.weigh(probs)
    for x, y in [(0, 0), (factor, 2 * factor), (1, factor - 1), (2 * factor + 1, 3), (-5, 7)]:
        px, py = x % factor, y % factor
        a = np_ops.pool(weighted, px, py)
        b = th_ops.pool(torch.from_numpy(weighted.copy()), px, py).numpy()
        ws = g.phase_weight(px, py)
        np.testing.assert_array_equal(th_ops.phase_weight(px, py).numpy(), ws)
        want_ws, ox, oy = _ref_pool(weight[None], factor, x, y)
        assert (ox, oy) == (x // factor, y // factor)
        np.testing.assert_allclose(ws, want_ws[0], rtol=1e-6)
        for m in range(len(probs)):
            want, _, _ = _ref_pool(probs[m] * weight.astype(np.float64), factor, x, y)
            assert a[m].shape == b[m].shape == want.shape
            np.testing.assert_allclose(a[m], want, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(b[m], want, rtol=1e-5, atol=1e-6)
        assert g.aligned(x, y) == (g.can_pool and (px, py) == (0, 0))


def test_weight_sum_and_fused_cpp_pass_agree_with_the_backends(rng):
    from virtime.translation.postprocess import WindowPostprocessor

    tile, window, core = 64, 32, 48
    origins, weight = _origins(tile, window, 16), ramp_weight(window, 8)
    g = WindowGeometry(weight, 4, origins, tile, core)
    want_ws = np.zeros((tile, tile))
    for x, y in origins:
        want_ws[y : y + window, x : x + window] += weight
    np.testing.assert_allclose(g.weight_sum, want_ws, rtol=1e-6)
    logits = rng.normal(0.0, 2.0, (2 * len(origins), 4, window, window)).astype(np.float32)
    res = WindowPostprocessor(weight, 4, origins, tile, core).process(logits)
    ops = g.numpy()
    weighted = ops.weigh(1.0 / (1.0 + np.exp(-logits.astype(np.float64))))
    np.testing.assert_allclose(res.wp.reshape(-1, 4, 8, 8), ops.pool(weighted, 0, 0), rtol=1e-5,
                               atol=1e-5)
    np.testing.assert_allclose(res.ws, g.phase_weight(0, 0), rtol=1e-6)
    blended = ops.blend(weighted.reshape(2, len(origins), 4, window, window), size=core)
    np.testing.assert_allclose(res.mean_probability, blended.mean(axis=(2, 3)), rtol=1e-5)


@pytest.mark.parametrize(
    ("origins", "core", "message"),
    [([(0, 0), (9, 0)], 16, "inside a 16-pixel tile"), ([], 16, "inside a 16-pixel tile"),
     ([(0, 0)], 0, "core must be in")],
)
def test_one_geometry_check_behind_every_entry_point(origins, core, message):
    """The host pass, the device path and the cell tiles refuse a bad geometry with the same
    error: the one check in WindowGeometry."""
    from virtime.cells.collector import tile_probabilities
    from virtime.translation.device_path import DeviceTranslator
    from virtime.translation.postprocess import WindowPostprocessor

    class Engine:
        device = "cpu"

    weight = np.ones((8, 8), np.float32)
    calls = [lambda: WindowGeometry(weight, 2, origins, 16, core),
             lambda: WindowPostprocessor(weight, 2, origins, 16, core),
             lambda: DeviceTranslator(Engine(), weight, 2, origins, 16, core)]
    if core:
        calls.append(lambda: tile_probabilities(np.zeros((len(origins), 2, 8, 8)), origins,
                                                weight, 16))
    for call in calls:
        with pytest.raises(InvalidArgumentError, match=message):
            call()
    with pytest.raises(InvalidArgumentError, match="factor must be >= 1"):
        WindowGeometry(weight, 0, [(0, 0)], 16, 16)


def test_host_pass_and_device_path_take_one_geometry():
    from virtime.translation.device_path import DeviceTranslator
    from virtime.translation.postprocess import WindowPostprocessor

    class Engine:
        device = "cpu"

    g = WindowGeometry(np.ones((8, 8), np.float32), 2, [(0, 0), (8, 0)], 16, 16)
    assert WindowGeometry.of(g) is g
    assert WindowPostprocessor(g, threads=1).geometry is g
    assert DeviceTranslator(Engine(), g).geometry is g
    named = WindowGeometry.of(weight=g.weight, factor=2, origins=g.origins, tile_size=16, core=16)
    assert named is not g and named.origins.tolist() == [[0, 0], [8, 0]]
