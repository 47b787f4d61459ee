"""C++ batcher (read + Macenko + pack) against a Python loop of openslide-python + numpy Macenko.

Run: ``python -m pytest benchmarks/bench_batcher.py --benchmark-enable -s``. Both paths tile the
same synthetic slide in the same run; the C++ output is checked against the baseline's, and the
ratio of tiles/s is printed (and recorded in benchmarks/RESULTS.md).
"""

from __future__ import annotations

import time

import numpy as np
import openslide
import pytest

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
REF_M = np.array([[0.5626, 0.2159], [0.7201, 0.8012], [0.4062, 0.5581]])
REF_MAXC = np.array([1.9705, 1.0308])


def numpy_macenko(tile: np.ndarray, beta: float = 0.15, alpha: float = 1.0) -> np.ndarray:
    """The usual numpy Macenko (as torchstain/StainTools do it), the baseline's normalizer."""
    od = -np.log((tile.reshape(-1, 3).astype(np.float64) + 1) / 256)
    tissue = od[(od > beta).all(axis=1)]
    if len(tissue) < 500:
        return tile
    _, vecs = np.linalg.eigh(np.cov(tissue.T))
    plane = vecs[:, 1:3]
    phi = np.arctan2(tissue @ plane[:, 1], tissue @ plane[:, 0])
    lo, hi = np.percentile(phi, alpha), np.percentile(phi, 100 - alpha)
    v1 = plane @ np.array([np.cos(lo), np.sin(lo)])
    v2 = plane @ np.array([np.cos(hi), np.sin(hi)])
    m = np.array([v1, v2]).T if v1[0] > v2[0] else np.array([v2, v1]).T
    maxc = np.percentile(np.linalg.lstsq(m, tissue.T, rcond=None)[0], 99, axis=1)
    conc = np.linalg.lstsq(m, od.T, rcond=None)[0]
    conc *= (REF_MAXC / maxc)[:, None]
    out = 256 * np.exp(-REF_M @ conc) - 1
    return np.clip(out.T.reshape(tile.shape), 0, 255).astype(np.uint8)


def python_loop(path, xy, size):
    batches = []
    with openslide.OpenSlide(str(path)) as osr:
        for x, y in xy:
            rgba = np.asarray(osr.read_region((int(x), int(y)), 0, (size, size)))
            tile = numpy_macenko(np.ascontiguousarray(rgba[..., :3]))
            batches.append(((tile / np.float32(255) - MEAN) / STD).transpose(2, 0, 1))
    return np.stack(batches)


@pytest.fixture(scope="module")
def bench_slide(tmp_path_factory):
    from virtime.simulate.slides import make_slide

    return make_slide(tmp_path_factory.mktemp("bench") / "bench.svs", 3072, 2048, mpp=0.25, seed=5)


@pytest.fixture(scope="module")
def grid_and_slide(bench_slide):
    from virtime.slide import Slide
    from virtime.tiling import TilingConfig, make_tile_grid

    slide = Slide(bench_slide)
    return slide, make_tile_grid(slide, TilingConfig(tile_size=512, min_tissue=0.0))


def cpp_batches(slide, grid, normalizer):
    from virtime.batcher import iter_batches

    return np.concatenate([b.tensor for b in iter_batches(
        slide, grid, normalizer=normalizer, batch_size=8, emit_uint8=False)])


def test_batcher_vs_python_loop(benchmark, bench_slide, grid_and_slide):
    from virtime.stain import MacenkoNormalizer

    slide, grid = grid_and_slide
    normalizer = MacenkoNormalizer()
    t0 = time.perf_counter()
    baseline = python_loop(bench_slide, grid.xy, grid.tile_size)
    baseline_s = time.perf_counter() - t0
    result = benchmark.pedantic(cpp_batches, args=(slide, grid, normalizer), rounds=3, iterations=1)
    # Same tiles, same normalization up to the two implementations' rounding.
    diff = np.abs(result - baseline) * STD[None, :, None, None] * 255
    assert result.shape == baseline.shape
    assert np.median(diff) <= 1.0, f"median |C++ - numpy| = {np.median(diff):.2f} grey levels"
    cpp_s = benchmark.stats.stats.min if benchmark.stats else None
    if cpp_s:
        n = len(grid)
        print(f"\nbatcher: {n} tiles; python loop {n / baseline_s:.1f} tiles/s, "
              f"C++ batcher {n / cpp_s:.1f} tiles/s, ratio {baseline_s / cpp_s:.1f}x")
