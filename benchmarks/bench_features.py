"""Slide features: numba kernel vs a vectorised numpy reference, single thread and parallel.

    python -m pytest benchmarks/bench_features.py --benchmark-enable -p no:cacheprovider
    python benchmarks/bench_features.py 8192        # one timed run at 23 x 8192 x 8192, ratios

The map size defaults to 23 x 2048 x 2048 under pytest (set VIRTIME_BENCH_FEATURES_SIZE to
change it). Both implementations stream the same row strips (1024 rows), compute every metric
(density, mean, entropy, SNR, sharpness, 210 OR/AND pairs) and must agree to 1e-6 relative.
"""

from __future__ import annotations

import itertools
import math
import os
import sys
import time

import numba
import numpy as np
import pytest

from virtime.channels import CHANNEL_NAMES, PROTEIN_INDICES
from virtime.features import SlideFeatureAccumulator

MPP, BIN_UM, THR = 0.5, 64.0, 0.5
STRIP = 1024
_TIMES: dict[str, float] = {}


def make_map(size: int, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """Blobby uint8 map (23, size, size) with ~15-30 % positives, and a tissue mask (~60 %)."""
    rng = np.random.default_rng(seed)
    c = size // 64 + 1
    out = np.empty((23, size, size), np.uint8)
    for k in range(23):
        coarse = (rng.random((c, c)) * 210).astype(np.uint8)
        up = np.repeat(np.repeat(coarse, 64, axis=0), 64, axis=1)[:size, :size]
        out[k] = up + rng.integers(0, 45, (size, size), dtype=np.uint8)
    tc = rng.random((c, c)) < 0.6
    tissue = np.repeat(np.repeat(tc, 64, axis=0), 64, axis=1)[:size, :size]
    return out, tissue


def numpy_features(prob: np.ndarray, tissue: np.ndarray) -> dict[str, float]:
    """Vectorised numpy reference: per-strip partial sums, then the documented formulas."""
    idx = list(PROTEIN_INDICES)
    K = len(idx)
    H, W = tissue.shape
    bpx = int(round(BIN_UM / MPP))
    nby, nbx = -(-H // bpx), -(-W // bpx)
    thr = THR * 255
    n = 0
    sums = np.zeros((6, K))
    cooc = np.zeros((K, K))
    bins = np.zeros((K + 1, nby * nbx))
    bid_x = np.arange(W) // bpx
    for r0 in range(0, H, STRIP):
        r1 = min(H, r0 + STRIP + 1)  # one extra row for the vertical pairs across strips
        t = tissue[r0:r1]
        own = np.zeros_like(t)
        own[: min(STRIP, H - r0)] = True
        to = t & own
        n += int(to.sum())
        bid = ((np.arange(r0, r1) // bpx)[:, None] * nbx + bid_x[None, :])[to]
        bins[K] += np.bincount(bid, minlength=nby * nbx)
        hx = t[:, 1:] & t[:, :-1] & own[:, 1:]
        vy = t[1:] & t[:-1] & own[:-1]
        masks = []
        for k, c in enumerate(idx):
            q = prob[c, r0:r1].astype(np.float64)
            pos = (q > thr) & to
            masks.append(pos)
            qt = q[to]
            qp = q[pos]
            sums[0, k] += pos.sum()
            sums[1, k] += qt.sum()
            sums[2, k] += qp.sum()
            sums[3, k] += (qt * qt).sum()
            sums[4, k] += (qp * qp).sum()
            sums[5, k] += np.abs(np.diff(q, axis=1))[hx].sum() + np.abs(np.diff(q, axis=0))[vy].sum()
            bins[k] += np.bincount(((np.arange(r0, r1) // bpx)[:, None] * nbx
                                    + bid_x[None, :])[pos], minlength=nby * nbx)
        for a, b in itertools.combinations(range(K), 2):
            cooc[a, b] += np.count_nonzero(masks[a] & masks[b])
    out: dict[str, float] = {}
    names = [CHANNEL_NAMES[c] for c in idx]
    tb = bins[K] > 0
    for k, name in enumerate(names):
        pos, s, sp, sq, sqp, tv = sums[:, k]
        out[f"{name}.density"] = pos / n
        out[f"{name}.mean"] = s / 255 / n
        cb = bins[k][tb]
        qv = cb[cb > 0] / cb.sum() if cb.sum() else np.zeros(0)
        out[f"{name}.entropy"] = float(-(qv * np.log(qv)).sum() / math.log(tb.sum()))
        nneg = n - pos
        mu = (s - sp) / nneg
        out[f"{name}.snr"] = (sp / pos - mu) / math.sqrt((sq - sqp) / nneg - mu * mu)
        out[f"{name}.sharpness"] = tv / 255 / n
    for a, b in itertools.combinations(range(K), 2):
        out[f"{names[a]}|{names[b]}.or_density"] = (sums[0, a] + sums[0, b] - cooc[a, b]) / n
        out[f"{names[a]}&{names[b]}.and_density"] = cooc[a, b] / n
    return out


def numba_features(prob: np.ndarray, tissue: np.ndarray) -> dict[str, float | str]:
    """The library path: the accumulator fed the same 1024-row strips."""
    acc = SlideFeatureAccumulator(MPP, bin_um=BIN_UM, threshold=THR)
    for r0 in range(0, tissue.shape[0], STRIP):
        acc.add_tile(prob[:, r0:r0 + STRIP], tissue[r0:r0 + STRIP], r0, 0)
    return acc.result()


def check_same(got: dict, want: dict) -> None:
    for key, value in want.items():
        assert math.isclose(got[key], value, rel_tol=1e-6, abs_tol=1e-12), (key, got[key], value)


@pytest.fixture(scope="module")
def slide_map():
    size = int(os.environ.get("VIRTIME_BENCH_FEATURES_SIZE", "2048"))
    prob, tissue = make_map(size)
    numba_features(prob[:, :64, :64], np.ones((64, 64), bool))  # compile outside the timing
    return prob, tissue


def _run(benchmark, name, fn, prob, tissue):
    t0 = time.perf_counter()
    result = benchmark.pedantic(fn, args=(prob, tissue), rounds=1, iterations=1)
    _TIMES[name] = time.perf_counter() - t0
    return result


@pytest.mark.benchmark(group="features")
def test_numpy_reference(benchmark, slide_map):
    _run(benchmark, "numpy", numpy_features, *slide_map)


@pytest.mark.benchmark(group="features")
def test_numba_single_thread(benchmark, slide_map):
    numba.set_num_threads(1)
    try:
        got = _run(benchmark, "numba-1", numba_features, *slide_map)
    finally:
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    check_same(got, numpy_features(*slide_map))
    print(f"\nnumba 1 thread vs numpy: {_TIMES['numpy'] / _TIMES['numba-1']:.1f}x")


@pytest.mark.benchmark(group="features")
def test_numba_parallel(benchmark, slide_map):
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    _run(benchmark, "numba-par", numba_features, *slide_map)
    print(f"\nnumba {numba.get_num_threads()} threads vs numpy: "
          f"{_TIMES['numpy'] / _TIMES['numba-par']:.1f}x")


def main(size: int) -> None:
    """One timed run of each at ``size`` (the full-size measurement of RESULTS.md)."""
    prob, tissue = make_map(size)
    numba_features(prob[:, :64, :64], np.ones((64, 64), bool))
    t0 = time.perf_counter()
    want = numpy_features(prob, tissue)
    t_np = time.perf_counter() - t0
    rows = [("numpy reference", t_np, 1.0)]
    for threads in (1, numba.config.NUMBA_NUM_THREADS):
        numba.set_num_threads(threads)
        t0 = time.perf_counter()
        got = numba_features(prob, tissue)
        t = time.perf_counter() - t0
        check_same(got, want)
        rows.append((f"numba, {threads} thread(s)", t, t_np / t))
    print(f"map 23 x {size} x {size} uint8, tissue {tissue.mean():.0%}")
    for name, t, ratio in rows:
        print(f"{name:24s} {t:8.2f} s   {ratio:5.1f}x")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2048)
