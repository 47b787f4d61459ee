"""GigaTIME-Flash: ViT + LoRA + decoder, and the official/PEFT key layouts."""

from __future__ import annotations

import pytest
import torch

from virtime.errors import CheckpointError
from virtime.models import GigaTIMEFlash, detect_architecture
from virtime.models.flash import load_flash_state_dict
from virtime.models.lora import LoRALinear

TINY = dict(img_size=64, dim=48, depth=4, heads=2, mlp_hidden=64, decoder=(24, 16, 8, 8), stem=4)


def test_full_size_layout_and_names():
    model = GigaTIMEFlash()
    keys = model.state_dict().keys()
    assert "encoder.patch_embed.proj.weight" in keys and "encoder.cls_token" in keys
    assert model.state_dict()["encoder.pos_embed"].shape == (1, 16 * 16 + 1, 384)
    for name in ("norm1.weight", "attn.qkv.weight", "attn.qkv.lora_A.weight", "attn.proj.weight",
                 "attn.proj.lora_B.weight", "ls1.gamma", "norm2.weight", "mlp.fc1.weight",
                 "mlp.fc2.weight", "ls2.gamma"):
        assert f"encoder.blocks.11.{name}" in keys
    assert model.state_dict()["encoder.blocks.0.attn.qkv.lora_A.weight"].shape == (8, 384)
    assert model.encoder.blocks[0].attn.qkv.scaling == 2.0  # alpha 16 / r 8


def test_forward_shape():
    model = GigaTIMEFlash(**TINY).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 64, 64)).shape == (2, 23, 64, 64)


def test_lora_starts_as_base_layer():
    layer = LoRALinear(6, 5, r=2, alpha=4)
    x = torch.randn(3, 6)
    assert torch.allclose(layer(x), x @ layer.weight.T + layer.bias)
    torch.nn.init.normal_(layer.lora_B.weight)
    expected = x @ (layer.weight + 2.0 * layer.lora_B.weight @ layer.lora_A.weight).T + layer.bias
    assert torch.allclose(layer(x), expected, atol=1e-5)


def _peft_layout(state):
    """Rename our keys to the official/PEFT layout: module., encoder.base_model.model.,
    .base_layer., lora_X.default., and DINOv2's w12 / w3."""
    out = {}
    for k, v in state.items():
        if k.startswith("encoder."):
            k = "encoder.base_model.model." + k[len("encoder."):]
            for lin in ("attn.qkv", "attn.proj"):
                k = k.replace(f"{lin}.weight", f"{lin}.base_layer.weight")
                k = k.replace(f"{lin}.bias", f"{lin}.base_layer.bias")
                k = k.replace(f"{lin}.lora_A.", f"{lin}.lora_A.default.")
                k = k.replace(f"{lin}.lora_B.", f"{lin}.lora_B.default.")
            k = k.replace("mlp.fc1.", "mlp.w12.").replace("mlp.fc2.", "mlp.w3.")
        out["module." + k] = v
    return out


def test_official_key_layout_loads():
    torch.manual_seed(0)
    src = GigaTIMEFlash(**TINY).eval()
    for p in src.parameters():  # non-zero LoRA so a dropped factor would show
        torch.nn.init.normal_(p, std=0.05)
    state = _peft_layout(src.state_dict())
    assert any(".base_layer." in k for k in state)
    arch, cfg = detect_architecture(state)
    assert arch == "gigatime-flash" and cfg["dim"] == 48 and cfg["depth"] == 4
    dst = GigaTIMEFlash(**TINY).eval()
    missing, unexpected = load_flash_state_dict(dst, state)
    assert missing == [] and unexpected == []
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(src(x), dst(x), atol=1e-6)


def test_unmatched_keys_are_reported(caplog):
    dst = GigaTIMEFlash(**TINY)
    state = dict(dst.state_dict())
    state["decoder.official_only.weight"] = torch.zeros(3)
    del state["head.bias"]
    with pytest.raises(CheckpointError, match="decoder.official_only.weight"):
        load_flash_state_dict(dst, state)
    missing, unexpected = load_flash_state_dict(dst, state, strict=False)
    assert missing == ["head.bias"] and unexpected == ["decoder.official_only.weight"]
    assert "unmatched" in caplog.text
