"""Loading encoder weights: official layouts load strictly, safely, and bad files fail clearly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from virtime.embed import (
    SlideEncoder,
    SlideEncoderConfig,
    TileEncoder,
    TileEncoderConfig,
    load_slide_encoder,
    load_tile_encoder,
)
from virtime.errors import CheckpointError

TILE = TileEncoderConfig(embed_dim=64, depth=2, num_heads=1, mlp_hidden=128)
SLIDE = SlideEncoderConfig(in_chans=64, embed_dim=32, depth=2, num_heads=16, ffn_dim=48)


def test_tile_roundtrip_official_layout(tmp_path, rng):
    torch.manual_seed(1)
    model = TileEncoder(TILE).eval()
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")  # timm's plain state dict
    loaded = load_tile_encoder(tmp_path / "pytorch_model.bin", num_heads=1)
    assert loaded.config == TILE
    x = torch.from_numpy(rng.standard_normal((2, 3, 224, 224)).astype(np.float32))
    with torch.no_grad():
        np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())


def test_slide_roundtrip_with_model_wrapper_and_stored_pos_embed(tmp_path, rng):
    torch.manual_seed(2)
    model = SlideEncoder(SLIDE).eval()
    state = dict(model.state_dict())
    state["pos_embed"] = torch.zeros(1, 5, 32)  # an old checkpoint with the fixed table
    torch.save({"model": state}, tmp_path / "slide_encoder.pth")
    loaded = load_slide_encoder(tmp_path / "slide_encoder.pth")
    assert loaded.config == SLIDE
    x = torch.from_numpy(rng.standard_normal((10, 64)).astype(np.float32))
    c = torch.from_numpy((rng.integers(0, 9, (10, 2)) * 256).astype(np.float32))
    with torch.no_grad():
        np.testing.assert_array_equal(loaded(x, c).numpy(), model(x, c).numpy())


def test_missing_and_unexpected_keys_are_listed(tmp_path):
    state = dict(TileEncoder(TILE).state_dict())
    del state["blocks.1.ls2.gamma"]
    state["head.weight"] = torch.zeros(3, 64)
    torch.save(state, tmp_path / "bad.bin")
    with pytest.raises(CheckpointError, match=r"missing 1: blocks\.1\.ls2\.gamma.*unexpected 1: "
                                              r"head\.weight"):
        load_tile_encoder(tmp_path / "bad.bin")


def test_shape_mismatch_is_listed(tmp_path):
    state = dict(SlideEncoder(SLIDE).state_dict())
    state["encoder.layers.1.ffn.fc2.bias"] = torch.zeros(7)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match=r"shape 1: encoder\.layers\.1\.ffn\.fc2\.bias"):
        load_slide_encoder(tmp_path / "bad.pth")


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickle_with_code_is_refused(tmp_path):
    torch.save({"x": _Evil()}, tmp_path / "evil.bin")
    with pytest.raises(CheckpointError, match="refused"):
        load_tile_encoder(tmp_path / "evil.bin")


def test_wrong_model_and_missing_file(tmp_path):
    torch.save(SlideEncoder(SLIDE).state_dict(), tmp_path / "slide.pth")
    with pytest.raises(CheckpointError, match="not a Prov-GigaPath tile encoder"):
        load_tile_encoder(tmp_path / "slide.pth")
    with pytest.raises(CheckpointError, match="gated"):
        load_tile_encoder(tmp_path / "absent.bin")
