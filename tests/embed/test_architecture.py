"""State-dict layout of the tile and slide encoders against the official checkpoints' names.

The expected names and shapes are written out here from the public model definitions
(timm ``VisionTransformer`` as configured by ``vit_giant_patch14_dinov2`` with patch 16, img 224,
``mlp_ratio=5.33334`` -> fc1 8192 = two SwiGLU halves of 4096; prov-gigapath ``LongNetViT`` with
torchscale's encoder, ``subln=True``), not taken from our modules.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from virtime.embed import (
    SlideEncoder,
    SlideEncoderConfig,
    TileEncoder,
    TileEncoderConfig,
    optimal_segment_lengths,
    sincos_position_embedding,
    slide_encoder_param_count,
    tile_encoder_param_count,
)


def expected_tile_layout(d: int, depth: int, hidden: int, patch: int, grid: int) -> dict:
    keys = {
        "cls_token": (1, 1, d),
        "pos_embed": (1, 1 + grid * grid, d),
        "patch_embed.proj.weight": (d, 3, patch, patch),
        "patch_embed.proj.bias": (d,),
        "norm.weight": (d,),
        "norm.bias": (d,),
    }
    for i in range(depth):
        b = f"blocks.{i}."
        keys.update({
            b + "norm1.weight": (d,), b + "norm1.bias": (d,),
            b + "attn.qkv.weight": (3 * d, d), b + "attn.qkv.bias": (3 * d,),
            b + "attn.proj.weight": (d, d), b + "attn.proj.bias": (d,),
            b + "ls1.gamma": (d,),
            b + "norm2.weight": (d,), b + "norm2.bias": (d,),
            b + "mlp.fc1.weight": (hidden, d), b + "mlp.fc1.bias": (hidden,),
            b + "mlp.fc2.weight": (d, hidden // 2), b + "mlp.fc2.bias": (d,),
            b + "ls2.gamma": (d,),
        })
    return keys


def expected_slide_layout(d_in: int, d: int, depth: int, ffn: int) -> dict:
    keys = {
        "cls_token": (1, 1, d),
        "patch_embed.proj.weight": (d, d_in), "patch_embed.proj.bias": (d,),
        "encoder.layer_norm.weight": (d,), "encoder.layer_norm.bias": (d,),
        "norm.weight": (d,), "norm.bias": (d,),
    }
    for i in range(depth):
        b = f"encoder.layers.{i}."
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            keys[b + f"self_attn.{proj}.weight"] = (d, d)
            keys[b + f"self_attn.{proj}.bias"] = (d,)
        for ln, width in (("self_attn.inner_attn_ln", d), ("self_attn_layer_norm", d),
                          ("ffn.ffn_layernorm", ffn), ("final_layer_norm", d)):
            keys[b + ln + ".weight"] = (width,)
            keys[b + ln + ".bias"] = (width,)
        keys.update({b + "ffn.fc1.weight": (ffn, d), b + "ffn.fc1.bias": (ffn,),
                     b + "ffn.fc2.weight": (d, ffn), b + "ffn.fc2.bias": (d,)})
    return keys


def layout(model: torch.nn.Module) -> dict:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_full_tile_encoder_layout_on_meta_device():
    with torch.device("meta"):
        model = TileEncoder()
    assert layout(model) == expected_tile_layout(1536, 40, 8192, 16, 14)
    n = sum(p.numel() for p in model.parameters())
    assert n == tile_encoder_param_count() == 1_134_953_984  # "~1.13 B" of the paper
    assert int(1536 * 5.33334) == 8192  # timm's hidden width for mlp_ratio 5.33334


def test_full_slide_encoder_layout_on_meta_device():
    with torch.device("meta"):
        model = SlideEncoder()
    assert layout(model) == expected_slide_layout(1536, 768, 12, 3072)
    assert sum(p.numel() for p in model.parameters()) == slide_encoder_param_count()
    # no 3 GB position buffer in the state dict (official: non-persistent)
    assert not any("pos_embed" in k for k in model.state_dict())


def test_small_configs_same_layout():
    tile = TileEncoder(TileEncoderConfig(embed_dim=64, depth=2, num_heads=4, mlp_hidden=128))
    assert layout(tile) == expected_tile_layout(64, 2, 128, 16, 14)
    slide = SlideEncoder(SlideEncoderConfig(in_chans=64, embed_dim=32, depth=2, num_heads=4,
                                            ffn_dim=48))
    assert layout(slide) == expected_slide_layout(64, 32, 2, 48)


def test_official_segment_lengths():
    # 2 ** linspace(10, 20, 5) truncated: 2**12.5 = 5792.6, 2**17.5 = 185363.8
    assert optimal_segment_lengths(262144, 256) == (1024, 5792, 32768, 185363, 1048576)
    assert SlideEncoderConfig().segments == (1024, 5792, 32768, 185363, 1048576)


def _mae_table(dim: int, grid: int) -> np.ndarray:
    """The MAE/GigaPath 2-D sin-cos table, written independently (rows = 1 + r*grid + c)."""
    def one_d(d, pos):
        omega = 1.0 / 10000 ** (np.arange(d // 2) / (d / 2.0))
        out = np.outer(pos, omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    gw, gh = np.meshgrid(np.arange(grid, dtype=np.float32), np.arange(grid, dtype=np.float32))
    emb = np.concatenate([one_d(dim // 2, gw.reshape(-1)), one_d(dim // 2, gh.reshape(-1))], 1)
    return np.concatenate([np.zeros((1, dim)), emb])


def test_position_rows_match_the_official_table(rng):
    grid, dim = 20, 16
    table = _mae_table(dim, grid)
    coords = rng.integers(0, grid * 256, size=(50, 2)).astype(np.float64)
    got = sincos_position_embedding(torch.from_numpy(coords), dim, grid, 256).numpy()
    rows = (np.floor(coords[:, 0] / 256) * grid + np.floor(coords[:, 1] / 256)).astype(int) + 1
    np.testing.assert_allclose(got, table[rows].astype(np.float32), atol=1e-6)


def test_position_outside_grid_is_an_error():
    with pytest.raises(ValueError, match="outside"):
        sincos_position_embedding(torch.tensor([[256.0 * 30, 0.0]]), 16, 20, 256)


def test_tile_encoder_forward_matches_manual_vit(rng):
    """Recompute a 1-block ViT with plain tensor ops from the state dict."""
    torch.manual_seed(0)
    cfg = TileEncoderConfig(embed_dim=32, depth=1, num_heads=2, mlp_hidden=64, init_values=0.5)
    model = TileEncoder(cfg).eval()
    x = torch.from_numpy(rng.standard_normal((2, 3, 224, 224)).astype(np.float32))
    s = model.state_dict()
    ln = torch.nn.functional.layer_norm
    t = torch.nn.functional.conv2d(x, s["patch_embed.proj.weight"], s["patch_embed.proj.bias"],
                                   stride=16).flatten(2).transpose(1, 2)
    t = torch.cat([s["cls_token"].expand(2, -1, -1), t], 1) + s["pos_embed"]
    b = "blocks.0."
    h = ln(t, (32,), s[b + "norm1.weight"], s[b + "norm1.bias"], 1e-6)
    qkv = h @ s[b + "attn.qkv.weight"].T + s[b + "attn.qkv.bias"]
    q, k, v = qkv.reshape(2, 197, 3, 2, 16).permute(2, 0, 3, 1, 4)
    a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(16), -1) @ v
    a = a.transpose(1, 2).reshape(2, 197, 32) @ s[b + "attn.proj.weight"].T + s[b + "attn.proj.bias"]
    t = t + s[b + "ls1.gamma"] * a
    h = ln(t, (32,), s[b + "norm2.weight"], s[b + "norm2.bias"], 1e-6)
    f = h @ s[b + "mlp.fc1.weight"].T + s[b + "mlp.fc1.bias"]
    f = torch.nn.functional.silu(f[..., :32]) * f[..., 32:]
    t = t + s[b + "ls2.gamma"] * (f @ s[b + "mlp.fc2.weight"].T + s[b + "mlp.fc2.bias"])
    ref = ln(t, (32,), s["norm.weight"], s["norm.bias"], 1e-6)[:, 0]
    with torch.no_grad():
        np.testing.assert_allclose(model(x).numpy(), ref.numpy(), atol=1e-5)
