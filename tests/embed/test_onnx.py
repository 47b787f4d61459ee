"""Tile encoder through the engine protocol: ONNX export and ONNX Runtime parity with torch."""

from __future__ import annotations

import numpy as np
import onnx
import torch

from virtime.embed import (
    TileEmbeddingHead,
    TileEncoder,
    TileEncoderConfig,
    export_tile_encoder_onnx,
)
from virtime.engines import create_engine


def test_onnxruntime_parity(tmp_path, rng):
    torch.manual_seed(3)
    enc = TileEncoder(TileEncoderConfig(embed_dim=64, depth=2, num_heads=4, mlp_hidden=128)).eval()
    path = export_tile_encoder_onnx(enc, tmp_path / "tile.onnx")
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert meta["window"] == "224" and meta["out_channels"] == "64"
    x = rng.standard_normal((5, 3, 224, 224)).astype(np.float32)
    with torch.no_grad():
        ref = enc(torch.from_numpy(x)).numpy()
    ort = create_engine(str(path), backend="onnxruntime", window=224, max_batch=2)
    got = ort.run(x)
    assert got.shape == (5, 64, 1, 1)
    assert np.abs(got[:, :, 0, 0] - ref).max() < 1e-4
    th = create_engine(TileEmbeddingHead(enc), backend="torch", device="cpu", window=224)
    assert np.abs(th.run(x)[:, :, 0, 0] - ref).max() < 1e-5
