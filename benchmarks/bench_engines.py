"""Engine throughput (windows/s) per backend and precision on pre-packed CPU batches.

Every engine runs the same model on the same batch; each result is checked against the torch fp32
output of this run (the baseline) within its precision band, and reported as a ratio to the
baseline's throughput measured in the same run. Run with::

    PYTHONPATH=python python -m pytest benchmarks/bench_engines.py --benchmark-enable -s

The model is GigaTIME's UNet++ at reduced width by default (the official width is ~70 GFLOP per
256-px window, too slow for a 2-core CI box); set ``VIRTIME_BENCH_FILTERS=32,64,128,256,512`` for
the official model, ``VIRTIME_BENCH_WINDOW`` / ``VIRTIME_BENCH_BATCH`` / ``VIRTIME_BENCH_ROUNDS`` to
change the shape and repeats.
"""

from __future__ import annotations

import os
import statistics
import time

import numpy as np
import pytest
import torch

from virtime.engines import create_engine

FILTERS = tuple(int(f) for f in os.environ.get("VIRTIME_BENCH_FILTERS", "8,16,32,64,128").split(","))
WINDOW = int(os.environ.get("VIRTIME_BENCH_WINDOW", "128"))
BATCH = int(os.environ.get("VIRTIME_BENCH_BATCH", "4"))
ROUNDS = int(os.environ.get("VIRTIME_BENCH_ROUNDS", "3"))

# (label, backend, precision, options, precision band relative to the logits' range)
CASES = [
    ("torch fp32", "torch", "fp32", {"channels_last": False}, 1e-5),
    ("torch fp32 channels_last", "torch", "fp32", {"channels_last": True}, 1e-4),
    ("torch bf16", "torch", "bf16", {"channels_last": False}, 5e-2),
    ("onnxruntime fp32", "onnxruntime", "fp32", {}, 1e-4),
    ("onnxruntime fp16", "onnxruntime", "fp16", {}, 1e-2),
]

_THROUGHPUT: dict[str, float] = {}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from virtime.models import GigaTIME

    torch.manual_seed(0)
    model = GigaTIME(filters=FILTERS).eval()
    x = np.random.default_rng(0).standard_normal((BATCH, 3, WINDOW, WINDOW)).astype(np.float32)
    with torch.inference_mode():
        baseline = model(torch.from_numpy(x)).numpy()
    yield model, x, baseline, tmp_path_factory.mktemp("engine-cache")
    base = _THROUGHPUT.get("torch fp32")
    print(f"\nengines: GigaTIME filters={FILTERS}, window {WINDOW}, batch {BATCH}, "
          f"{torch.get_num_threads()} torch threads")
    for label, rate in _THROUGHPUT.items():
        ratio = f"{rate / base:.2f}x" if base else "n/a"
        print(f"  {label:28s} {rate:8.2f} windows/s  ({ratio} vs torch fp32)")


@pytest.mark.parametrize(
    ("label", "backend", "precision", "opts", "band"), CASES, ids=[c[0] for c in CASES]
)
def test_engine_throughput(benchmark, setup, label, backend, precision, opts, band):
    model, x, baseline, cache = setup
    eng = create_engine(
        model, backend=backend, precision=precision, device="cpu", cache_dir=cache,
        max_batch=BATCH, window=WINDOW, **opts,
    )
    out = eng.run(x)  # warm-up (graph optimization, oneDNN primitive creation)
    err = float(np.abs(out - baseline).max() / np.abs(baseline).max())
    assert err < band, f"{label}: error {err:.2e} exceeds its band {band:.0e}"
    times = []
    for _ in range(ROUNDS):
        t0 = time.perf_counter()
        eng.run(x)
        times.append(time.perf_counter() - t0)
    rate = BATCH / statistics.median(times)
    _THROUGHPUT[label] = rate
    benchmark.extra_info.update(
        windows_per_s=rate,
        ratio_vs_torch_fp32=rate / _THROUGHPUT["torch fp32"],
        max_rel_error=err,
    )
    benchmark.pedantic(eng.run, args=(x,), rounds=1, iterations=1)
    eng.close()
