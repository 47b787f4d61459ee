"""Streaming pooled canvas against the usual dense full-resolution float32 canvas.

Run: ``python -m pytest benchmarks/bench_stitch.py --benchmark-enable -s``. Both stitch the same
overlap-64 windows (23 x 256 x 256, cosine ramps) of a strip of 512-pixel tiles; the baseline
accumulates ``w·p`` and ``w`` at model resolution for the whole strip and block-averages by 8 at
the end (what a naive pipeline does) and writes the same OME-Zarr pyramid, the candidate pools each window by 8 and streams finished
row bands to OME-Zarr. The outputs are checked against each other; time and accumulator-memory
ratios are printed (recorded in benchmarks/RESULTS.md).
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from virtime.stitch import omezarr
from virtime.stitch.canvas import StreamingCanvas, to_uint8
from virtime.stitch.windows import plan_windows, pool_weighted, tile_stride, window_weight

TILE, WIN, OVERLAP, F, C = 512, 256, 64, 8, 23
ROWS, COLS = 2, 6
_POOL_TIMES: list[float] = []


def _windows() -> list[tuple[int, int, int, int]]:
    s = tile_stride(TILE, OVERLAP)
    return [
        (r * s, c * s + ox, r * s + oy, k)
        for r in range(ROWS)
        for c in range(COLS)
        for k, (ox, oy) in enumerate(plan_windows(TILE, WIN, OVERLAP))
    ]


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    probs = [rng.random((C, WIN, WIN), dtype=np.float32) for _ in range(9)]
    s = tile_stride(TILE, OVERLAP)
    h, w = s * (ROWS - 1) + TILE, s * (COLS - 1) + TILE
    return probs, (h, w), window_weight(WIN, OVERLAP)


def _dense(path, probs, shape, weight):
    h, w = shape
    acc = np.zeros((C, h, w), np.float32)
    wacc = np.zeros((h, w), np.float32)
    for _, x, y, k in _windows():
        acc[:, y : y + WIN, x : x + WIN] += probs[k] * weight
        wacc[y : y + WIN, x : x + WIN] += weight
    num = acc.reshape(C, h // F, F, w // F, F).sum(axis=(2, 4))
    den = wacc.reshape(h // F, F, w // F, F).sum(axis=(1, 3))
    out = to_uint8(num / den)
    group = omezarr.create_pyramid(path, C, out.shape[1:], 32)  # same files as the candidate
    group["0"][:] = out
    n = omezarr.n_pyramid_levels(out.shape[1:], 32)
    for k in range(1, n):
        omezarr.build_level(group[str(k - 1)], group[str(k)], 32)
    return out, acc.nbytes + wacc.nbytes


def _streaming(path, probs, shape, weight):
    h, w = shape
    canvas = StreamingCanvas(path, (h // F, w // F), factor=F, mpp=2.0, chunk=32)
    peak = 0
    t_pool = 0.0
    for ty, x, y, k in _windows():
        canvas.flush_until(ty)
        t0 = time.perf_counter()
        wp, ws, ox, oy = pool_weighted(probs[k], weight, F, x, y)
        t_pool += time.perf_counter() - t0
        canvas.add_pooled(wp, ws, ox, oy)
        peak = max(peak, canvas.accumulator_nbytes)
    canvas.close()
    _POOL_TIMES.append(t_pool)
    return peak


def test_streaming_vs_dense_canvas(benchmark, data, tmp_path) -> None:
    import zarr

    probs, shape, weight = data
    t0 = time.perf_counter()
    dense, dense_bytes = _dense(tmp_path / "dense.ome.zarr", probs, shape, weight)
    t_dense = time.perf_counter() - t0
    counter = iter(range(10**6))
    peak = benchmark.pedantic(
        lambda: _streaming(tmp_path / f"c{next(counter)}.ome.zarr", probs, shape, weight),
        rounds=3,
        iterations=1,
    )
    got = np.asarray(zarr.open_group(str(tmp_path / "c0.ome.zarr"), mode="r")["0"][:])
    assert np.abs(got.astype(int) - dense.astype(int)).max() <= 1
    t_stream = benchmark.stats.stats.mean
    t_pool = float(np.mean(_POOL_TIMES))
    n = len(_windows())
    benchmark.extra_info.update(
        windows=n,
        dense_s=t_dense,
        stream_s=t_stream,
        speed_ratio=t_dense / t_stream,
        memory_ratio=dense_bytes / peak,
        pool_s=t_pool,
    )
    print(
        f"\n{n} windows: dense full-res {t_dense:.2f}s ({n / t_dense:.0f} win/s, "
        f"{dense_bytes / 2**20:.0f} MiB); streaming {t_stream:.2f}s ({n / t_stream:.0f} win/s, "
        f"peak accumulators {peak / 2**20:.1f} MiB incl. zarr writes and pyramid); "
        f"speed x{t_dense / t_stream:.2f}, memory /{dense_bytes / peak:.0f}; "
        f"of which pooling {t_pool:.2f}s ({n / t_pool:.0f} win/s)"
    )
