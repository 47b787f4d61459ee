"""Tile-embedding throughput (tiles/s) on CPU, and dilated vs dense attention in the slide encoder.

Tile encoder: a reduced ViT with the Prov-GigaPath layout (the official 1.1 B-parameter model is
~456 GFLOP per tile: hours per slide on CPU) run through the engine protocol; every engine's
embeddings are checked against the torch fp32 baseline of the same run, and throughput is
reported as a ratio to it. Slide encoder: dilated attention (official ratios 1..16) against one
dense segment over the same sequence, checked for shape and finite output. Run with::

    PYTHONPATH=python python -m pytest benchmarks/bench_embed.py --benchmark-enable -s

``VIRTIME_BENCH_EMBED_DIM`` / ``_DEPTH`` / ``_BATCH`` / ``_SEQ`` change the sizes.
"""

from __future__ import annotations

import os
import statistics
import time

import numpy as np
import pytest
import torch

from virtime.embed import (
    TileEmbeddingHead,
    TileEncoder,
    TileEncoderConfig,
    dilated_attention,
    export_tile_encoder_onnx,
    tile_encoder_flops,
)
from virtime.engines import create_engine

DIM = int(os.environ.get("VIRTIME_BENCH_EMBED_DIM", "192"))
DEPTH = int(os.environ.get("VIRTIME_BENCH_EMBED_DEPTH", "4"))
BATCH = int(os.environ.get("VIRTIME_BENCH_EMBED_BATCH", "8"))
SEQ = int(os.environ.get("VIRTIME_BENCH_EMBED_SEQ", "8192"))
ROUNDS = 3
_RATE: dict[str, float] = {}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.manual_seed(0)
    cfg = TileEncoderConfig(embed_dim=DIM, depth=DEPTH, num_heads=DIM // 64, mlp_hidden=DIM * 16 // 3 // 2 * 2)
    enc = TileEncoder(cfg).eval()
    x = np.random.default_rng(0).standard_normal((BATCH, 3, 224, 224)).astype(np.float32)
    onnx_path = export_tile_encoder_onnx(enc, tmp_path_factory.mktemp("onnx") / "tile.onnx")
    with torch.no_grad():
        ref = enc(torch.from_numpy(x)).numpy()
    return enc, x, onnx_path, ref


def _timed(engine, x) -> float:
    engine.run(x)  # warm-up
    times = []
    for _ in range(ROUNDS):
        t0 = time.perf_counter()
        engine.run(x)
        times.append(time.perf_counter() - t0)
    return len(x) / statistics.median(times)


@pytest.mark.parametrize("case", ["torch fp32", "torch bf16", "onnxruntime fp32"])
def test_tile_throughput(setup, case, benchmark):
    enc, x, onnx_path, ref = setup
    backend, precision = case.split()
    model = TileEmbeddingHead(enc) if backend == "torch" else str(onnx_path)
    engine = create_engine(model, backend=backend, precision=precision, device="cpu",
                           window=224, max_batch=BATCH)
    got = engine.run(x)[:, :, 0, 0]
    band = 5e-2 if precision == "bf16" else 1e-4
    assert np.abs(got - ref).max() <= band * max(1.0, np.abs(ref).max())
    rate = benchmark.pedantic(lambda: _timed(engine, x), rounds=1, iterations=1)
    _RATE[case] = rate
    base = _RATE.get("torch fp32", rate)
    print(f"\n{case}: {rate:.1f} tiles/s ({rate / base:.2f}x torch fp32; "
          f"{tile_encoder_flops(enc.config) / 1e9:.1f} GFLOP/tile)")


def test_dilated_vs_dense_attention(benchmark):
    rng = np.random.default_rng(1)
    q, k, v = (torch.from_numpy(rng.standard_normal((1, SEQ, 16, 48)).astype(np.float32))
               for _ in range(3))
    segs, ratios = (1024, 2048, 4096, 8192, 16384), (1, 2, 4, 8, 16)

    def run(s, r):
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = dilated_attention(q, k, v, s, r)
        assert out.shape == q.shape and torch.isfinite(out).all()
        return time.perf_counter() - t0

    dense = min(run((SEQ,), (1,)) for _ in range(2))
    dil = benchmark.pedantic(lambda: min(run(segs, ratios) for _ in range(2)), rounds=1,
                             iterations=1)
    print(f"\nL={SEQ}: dense {dense * 1e3:.0f} ms, dilated (5 branches) {dil * 1e3:.0f} ms, "
          f"ratio dense/dilated {dense / dil:.2f}x")
