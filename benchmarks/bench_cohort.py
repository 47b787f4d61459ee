"""Cohort throughput (slides/hour): a Dask LocalCluster against a plain sequential loop.

Run: ``python -m pytest benchmarks/bench_cohort.py --benchmark-enable -s``. A simulated cohort of
small slides (tiny random GigaTIME, 64-px windows at 0.5 um/px, 128-px tiles, ONNX Runtime) is
translated with features three ways, each into a fresh output root:

- ``sequential``: ``for slide: virtime.translate(slide, model, out, config)``, what
  ``virtime translate a b c ...`` does (engine built per slide), in one process;
- ``sequential-engine``: the same loop reusing one engine (the cohort's worker cache, no Dask);
- ``cohort``: :func:`virtime.cohort.run_cohort` on a LocalCluster of 2 worker processes (1 thread
  each), engines cached per worker, largest slide first.

All three are warmed up first (numba JIT, ONNX export, engine in each worker), so the numbers are
steady-state throughput; the cold cohort run (cluster start + warm-up) is printed too. Outputs of
the cohort are checked against the sequential loop's. Ratios go to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pandas as pd
import pytest

N_SLIDES = 10
RESULTS: dict[str, float] = {}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    import torch

    from virtime.models import GigaTIME, load, save
    from virtime.simulate.slides import make_slide
    from virtime.translation import TranslateConfig

    root = tmp_path_factory.mktemp("bench-cohort")
    torch.manual_seed(0)
    net = GigaTIME(filters=[4, 8, 16, 32, 64]).eval()
    weights = root / "tiny.safetensors"
    save(net, weights, input_mpp=0.5, window=64)
    rng = np.random.default_rng(7)
    paths = []
    for i in range(N_SLIDES + 2):  # two warm-up slides
        w, h = int(rng.integers(4, 11)) * 128, int(rng.integers(3, 7)) * 128
        paths.append(make_slide(root / f"slide{i:02d}.svs", w, h, mpp=0.5, seed=100 + i))
    config = TranslateConfig(tile_size=128, backend="onnxruntime", show_progress=False,
                             batch_size=4, window_batch=16, threads=2,
                             cache_dir=str(root / "cache"))
    return root, weights, load(weights), paths, config


def _manifest(paths):
    return pd.DataFrame({"path": [str(p) for p in paths],
                         "slide_id": [p.stem for p in paths],
                         "patient_id": [f"P{i}" for i in range(len(paths))]})


def _record(name: str, seconds: float) -> None:
    RESULTS[name] = seconds
    print(f"\n{name}: {N_SLIDES} slides in {seconds:.1f} s = {3600 * N_SLIDES / seconds:.0f} "
          f"slides/hour")


def test_sequential_loop(benchmark, setup):
    import virtime

    root, _, model, paths, config = setup
    virtime.translate(paths[0], model, root / "warm-seq", config)  # JIT + ONNX export

    def loop():
        t0 = time.perf_counter()
        for p in paths[2:]:
            virtime.translate(p, model, root / "seq", config)
        return time.perf_counter() - t0

    _record("sequential", benchmark.pedantic(loop, rounds=1, iterations=1))


def test_sequential_loop_reusing_engine(benchmark, setup):
    import virtime
    from virtime.engines import create_engine

    root, _, model, paths, config = setup
    engine = create_engine(model, backend="onnxruntime", max_batch=16, window=64,
                           cache_dir=config.cache_dir)

    def loop():
        t0 = time.perf_counter()
        for p in paths[2:]:
            virtime.translate(p, model, root / "seq-engine", config, engine=engine)
        return time.perf_counter() - t0

    _record("sequential-engine", benchmark.pedantic(loop, rounds=1, iterations=1))
    engine.close()


def test_cohort_local_cluster(benchmark, setup):
    import dask
    from distributed import Client, LocalCluster

    from virtime.cohort import CohortOptions, run_cohort

    root, weights, _, paths, config = setup
    cfg = dataclasses.replace(config, threads=1)
    opts = CohortOptions(show_progress=False)
    t_cold = time.perf_counter()
    with dask.config.set({"distributed.scheduler.allowed-failures": 2}):
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                               dashboard_address=":0")
    client = Client(cluster)
    try:
        run_cohort(_manifest(paths[:2]), weights, root / "warm-cohort", cfg, options=opts,
                   client=client)
        cold = time.perf_counter() - t_cold

        def run():
            t0 = time.perf_counter()
            result = run_cohort(_manifest(paths[2:]), weights, root / "cohort", cfg,
                                options=opts, client=client)
            assert result.counts["done"] == N_SLIDES
            return time.perf_counter() - t0

        _record("cohort", benchmark.pedantic(run, rounds=1, iterations=1))
    finally:
        client.close()
        cluster.close()
    print(f"cohort cold start (cluster + warm-up of 2 slides): {cold:.1f} s")
    for p in paths[2:]:  # same outputs as the plain loop
        a = pd.read_parquet(root / "seq" / p.stem / "tiles.parquet")
        b = pd.read_parquet(root / "cohort" / p.stem / "tiles.parquet")
        pd.testing.assert_frame_equal(a, b)
    if "sequential" in RESULTS:
        print(f"cohort / sequential speed-up: {RESULTS['sequential'] / RESULTS['cohort']:.2f}x")
    if "sequential-engine" in RESULTS:
        print(f"cohort / sequential-engine speed-up: "
              f"{RESULTS['sequential-engine'] / RESULTS['cohort']:.2f}x")
