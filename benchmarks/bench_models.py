"""Model benchmarks.

* GigaTIME-Flash against GigaTIME (#18): both at their official widths with random weights, the
  same windows through the same engine (virtime's torch engine and ONNX Runtime, fp32), each
  measurement in a fresh process so its peak RSS is its own; runs interleaved (A B, B A ...) and
  medians reported with the Flash/GigaTIME ratio. Threads per process: ``VIRTIME_BENCH_THREADS``
  (default 1; the development machine's 2 cores are shared). Run it alone with
  ``python benchmarks/bench_models.py`` (prints a Markdown table) or through pytest.
* The demo model's window latency against the full-width GigaTIME (same run), and the tissue
  simulator's 2048x2048 render time.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest
import torch

from virtime.models import GigaTIME, load_demo
from virtime.simulate.tissue import render_tissue

MODELS = ("gigatime-flash", "gigatime")
ENGINES = ("torch", "onnxruntime")


# ------------------------------------------------------------------ Flash vs GigaTIME (one process)
def measure(model_name: str, engine_name: str, *, batch: int = 2, calls: int = 2,
            threads: int = 1, cache_dir: str | None = None) -> dict:
    """Windows/s and peak RSS of one model through one engine, in this process.

    Builds the model at official widths (random weights, fixed seed), warms the engine with one
    call, then times ``calls`` calls of ``batch`` 256-px windows. The ONNX Runtime output is
    checked against torch fp32 on the same windows (< 1e-4 relative).
    """
    from virtime.engines import create_engine
    from virtime.models import GigaTIMEFlash

    torch.set_num_threads(threads)
    rss_start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    torch.manual_seed(0)
    model = (GigaTIMEFlash() if model_name == "gigatime-flash" else GigaTIME()).eval()
    x = np.random.default_rng(0).standard_normal((batch, 3, 256, 256)).astype(np.float32)
    opts = {"threads": threads} if engine_name == "onnxruntime" else {}
    engine = create_engine(model, backend=engine_name, precision="fp32", device="cpu",
                           cache_dir=cache_dir, max_batch=batch, window=256, **opts)
    try:
        y = engine.run(x)  # warm-up (and export for ONNX Runtime)
        t0 = time.perf_counter()
        for _ in range(calls):
            engine.run(x)
        seconds = time.perf_counter() - t0
    finally:
        engine.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # before the parity check
    check = None
    if engine_name == "onnxruntime":
        with torch.inference_mode():
            ref = model(torch.from_numpy(x)).numpy()
        check = float(np.abs(y - ref).max() / np.abs(ref).max())
    return {
        "model": model_name, "engine": engine_name, "threads": threads, "batch": batch,
        "windows_per_s": calls * batch / seconds if calls else float("nan"),
        "peak_rss_mib": peak,
        "rss_before_model_mib": rss_start,
        "params": sum(p.numel() for p in model.parameters()),
        "finite": bool(np.isfinite(y).all()), "ort_vs_torch_rel": check,
    }


def compare(rounds: int = 3, threads: int | None = None) -> list[dict]:
    """Every (engine, model) measured ``rounds`` times in fresh processes, interleaved."""
    threads = threads or int(os.environ.get("VIRTIME_BENCH_THREADS", "1"))
    results = []
    with tempfile.TemporaryDirectory(prefix="virtime-bench-models-") as cache:
        for model in MODELS:  # export once, so every timed ONNX Runtime process loads the cache
            subprocess.run([sys.executable, __file__, "--worker", model, "onnxruntime", "1", cache,
                            "--calls", "0"], check=True, capture_output=True, text=True)
        for r in range(rounds):
            for engine in ENGINES:
                for model in (MODELS if r % 2 == 0 else MODELS[::-1]):
                    out = subprocess.run(
                        [sys.executable, __file__, "--worker", model, engine, str(threads), cache],
                        check=True, capture_output=True, text=True)
                    results.append({**json.loads(out.stdout.strip().splitlines()[-1]), "round": r})
    return results


def summarize(results: list[dict]) -> list[dict]:
    """Medians per (engine, model) and the Flash / GigaTIME ratios."""
    rows = []
    for engine in ENGINES:
        med = {}
        for model in MODELS:
            runs = [x for x in results if x["engine"] == engine and x["model"] == model]
            med[model] = {k: statistics.median(x[k] for x in runs)
                          for k in ("windows_per_s", "peak_rss_mib", "rss_before_model_mib")}
            med[model]["runs"] = [round(x["windows_per_s"], 3) for x in runs]
        for model in MODELS:
            rows.append({"engine": engine, "model": model, **med[model],
                         "speed_vs_gigatime": med[model]["windows_per_s"]
                         / med["gigatime"]["windows_per_s"],
                         "rss_vs_gigatime": med[model]["peak_rss_mib"]
                         / med["gigatime"]["peak_rss_mib"]})
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| engine | model | windows/s (median) | runs | vs GigaTIME | peak RSS MiB | vs GigaTIME |",
             "|---|---|---:|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['engine']} fp32 | {r['model']} | {r['windows_per_s']:.3f} | "
                     f"{', '.join(map(str, r['runs']))} | {r['speed_vs_gigatime']:.2f}x | "
                     f"{r['peak_rss_mib']:.0f} | {r['rss_vs_gigatime']:.2f}x |")
    return "\n".join(lines)


def test_flash_vs_gigatime(benchmark):
    results = benchmark.pedantic(compare, kwargs={"rounds": 3}, rounds=1, iterations=1)
    assert all(x["finite"] for x in results)
    assert all(x["ort_vs_torch_rel"] < 1e-4 for x in results if x["engine"] == "onnxruntime")
    rows = summarize(results)
    benchmark.extra_info["flash_vs_gigatime"] = rows
    print("\n" + markdown(rows))


# ------------------------------------------------------------------ demo model, simulator
@pytest.fixture(scope="module")
def batch():
    return torch.randn(8, 3, 256, 256)


@pytest.fixture(scope="module")
def timings():
    return {}


def _forward(model, x):
    with torch.inference_mode():
        return model(x)


def test_full_gigatime_window(benchmark, batch, timings):
    model = GigaTIME().eval()
    out = benchmark.pedantic(_forward, args=(model, batch), rounds=2, iterations=1)
    assert out.shape == (8, 23, 256, 256)
    timings["full"] = benchmark.stats.stats.mean / len(batch)


def test_demo_window(benchmark, batch, timings):
    model = load_demo()
    out = benchmark.pedantic(_forward, args=(model, batch), rounds=5, iterations=1)
    assert out.shape == (8, 23, 256, 256)
    timings["demo"] = benchmark.stats.stats.mean / len(batch)
    if "full" in timings:
        benchmark.extra_info["speedup_vs_full"] = timings["full"] / timings["demo"]
        print(f"\ndemo {timings['demo'] * 1e3:.1f} ms/window, full "
              f"{timings['full'] * 1e3:.1f} ms/window, ratio {timings['full'] / timings['demo']:.1f}x")


def test_render_2048(benchmark, timings):
    rgb, _, cells = benchmark.pedantic(
        render_tissue, args=((2048, 2048),), kwargs={"mpp": 0.5, "rng": np.random.default_rng(0)},
        rounds=2, iterations=1)
    assert rgb.shape == (2048, 2048, 3) and len(cells) > 1000
    timings["render"] = benchmark.stats.stats.mean
    print(f"\nrender 2048x2048 at 0.5 um/px: {timings['render']:.2f} s, {len(cells)} cells")


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "--worker":
        name, eng, n_threads, cache_dir = sys.argv[2:6]
        n_calls = int(sys.argv[7]) if len(sys.argv) > 7 and sys.argv[6] == "--calls" else 2
        print(json.dumps(measure(name, eng, threads=int(n_threads), cache_dir=cache_dir,
                                 calls=n_calls)))
    else:
        n_rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
        print(markdown(summarize(compare(rounds=n_rounds))))
