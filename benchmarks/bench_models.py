"""Model benchmarks: demo-model window latency against the full-width GigaTIME (same run), and
the tissue simulator's 2048x2048 render time against rendering 16 separate 512x512 tiles."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from virtime.models import GigaTIME, load_demo
from virtime.simulate.tissue import render_tissue


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
    rgb, t, cells = benchmark.pedantic(
        render_tissue, args=((2048, 2048),), kwargs={"mpp": 0.5, "rng": np.random.default_rng(0)},
        rounds=2, iterations=1)
    assert rgb.shape == (2048, 2048, 3) and len(cells) > 1000
    timings["render"] = benchmark.stats.stats.mean
    print(f"\nrender 2048x2048 at 0.5 um/px: {timings['render']:.2f} s, {len(cells)} cells")
