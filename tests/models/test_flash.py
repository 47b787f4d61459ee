"""GigaTIME-Flash against an independent reference of the published architecture.

``_official_state`` makes random weights under the official checkpoint's key names (the notebook's
``GigaTIMEFlash``: timm ViT-S/16 wrapped by peft, LoRA on qkv/proj, decoder4..1, skip1..3,
final_conv); ``_reference_forward`` computes that architecture from the tensors alone with
torch's functional ops (explicit softmax attention, no virtime code). ``virtime.models.load`` must
reproduce it.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from virtime.channels import CHANNEL_NAMES
from virtime.errors import CheckpointError
from virtime.models import GigaTIME, GigaTIMEFlash, detect_architecture, load, save
from virtime.models.checkpoints import save_official_layout
from virtime.models.flash import canonical_key, load_flash_state_dict, official_key
from virtime.models.lora import LoRALinear

ENC = "encoder.base_model.model."
#: Reduced widths with the official key pattern (12 blocks, 4 decoders, 3 skips); heads = dim/64.
SMALL = {"dim": 64, "hidden": 64, "r": 4, "decoder": (16, 8, 8, 8)}


def _official_state(seed=0, dim=384, depth=12, hidden=1024, r=8, decoder=(192, 96, 48, 24),
                    classes=23, grid=14, patch=16):
    """Random weights, official key names and shapes, LoRA B and layer scales non-zero."""
    g = torch.Generator().manual_seed(seed)

    def w(*shape, std=None):
        fan_in = math.prod(shape[1:]) if len(shape) > 1 else 1
        return torch.randn(*shape, generator=g) * (std if std is not None else fan_in ** -0.5)

    def bias(n):
        return w(n, std=0.02)

    s = {ENC + "cls_token": w(1, 1, dim, std=0.02),
         ENC + "pos_embed": w(1, grid * grid + 1, dim, std=0.5),
         ENC + "patch_embed.proj.weight": w(dim, 3, patch, patch),
         ENC + "patch_embed.proj.bias": bias(dim)}
    for i in range(depth):
        b = f"{ENC}blocks.{i}."
        s[b + "norm1.weight"], s[b + "norm1.bias"] = 1 + w(dim, std=0.1), bias(dim)
        for name, out in (("qkv", 3 * dim), ("proj", dim)):
            s[f"{b}attn.{name}.base_layer.weight"] = w(out, dim)
            s[f"{b}attn.{name}.base_layer.bias"] = bias(out)
            s[f"{b}attn.{name}.lora_A.default.weight"] = w(r, dim)
            s[f"{b}attn.{name}.lora_B.default.weight"] = w(out, r, std=0.05)
        s[b + "ls1.gamma"] = w(dim, std=0.2)
        s[b + "norm2.weight"], s[b + "norm2.bias"] = 1 + w(dim, std=0.1), bias(dim)
        s[b + "mlp.fc1.weight"], s[b + "mlp.fc1.bias"] = w(2 * hidden, dim), bias(2 * hidden)
        s[b + "mlp.fc2.weight"], s[b + "mlp.fc2.bias"] = w(dim, hidden), bias(dim)
        s[b + "ls2.gamma"] = w(dim, std=0.2)
    s[ENC + "norm.weight"], s[ENC + "norm.bias"] = 1 + w(dim, std=0.1), bias(dim)
    cin = dim
    for k, cout in zip((4, 3, 2, 1), decoder):
        s[f"decoder{k}.0.weight"], s[f"decoder{k}.0.bias"] = w(cout, cin, 3, 3), bias(cout)
        s[f"decoder{k}.2.weight"], s[f"decoder{k}.2.bias"] = w(cout, cout, 3, 3), bias(cout)
        cin = cout
    for k, times, cout in ((1, 3, decoder[2]), (2, 2, decoder[1]), (3, 1, decoder[0])):
        cin = dim
        for j in range(times):  # ConvTranspose2d weight: (in, out, 2, 2)
            s[f"skip{k}.{j}.weight"] = w(cin, cout, 2, 2, std=(cin * 4) ** -0.5)
            s[f"skip{k}.{j}.bias"] = bias(cout)
            cin = cout
    s["final_conv.weight"], s["final_conv.bias"] = w(classes, decoder[3], 1, 1), bias(classes)
    return s


def _reference_forward(s, x, heads=6, take=(3, 5, 8, 11), lora_alpha=16.0):
    """The published forward from the official tensors, with functional ops only."""
    e = lambda k: s[ENC + k]
    t = F.conv2d(x, e("patch_embed.proj.weight"), e("patch_embed.proj.bias"), stride=16)
    n, d, gh, gw = t.shape
    t = t.flatten(2).transpose(1, 2)
    table = e("pos_embed")[:, 1:]  # the class slot is not used
    g0 = math.isqrt(table.shape[1])
    table = table.reshape(1, g0, g0, d).permute(0, 3, 1, 2)
    table = F.interpolate(table, size=(gh, gw), mode="bicubic", align_corners=False)
    t = t + table.permute(0, 2, 3, 1).reshape(1, gh * gw, d)

    def lora(h, name):
        base = F.linear(h, e(name + ".base_layer.weight"), e(name + ".base_layer.bias"))
        a = e(name + ".lora_A.default.weight")
        return base + lora_alpha / a.shape[0] * ((h @ a.T) @ e(name + ".lora_B.default.weight").T)

    grids = []
    i = 0
    while ENC + f"blocks.{i}.norm1.weight" in s:
        b = f"blocks.{i}."
        h = F.layer_norm(t, (d,), e(b + "norm1.weight"), e(b + "norm1.bias"), eps=1e-6)
        q, k, v = lora(h, b + "attn.qkv").reshape(n, -1, 3, heads, d // heads).unbind(2)
        q, k, v = (z.transpose(1, 2) for z in (q, k, v))
        att = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d // heads), dim=-1) @ v
        t = t + e(b + "ls1.gamma") * lora(att.transpose(1, 2).reshape(n, -1, d), b + "attn.proj")
        h = F.layer_norm(t, (d,), e(b + "norm2.weight"), e(b + "norm2.bias"), eps=1e-6)
        gate, value = F.linear(h, e(b + "mlp.fc1.weight"), e(b + "mlp.fc1.bias")).chunk(2, -1)
        mlp = F.linear(F.silu(gate) * value, e(b + "mlp.fc2.weight"), e(b + "mlp.fc2.bias"))
        t = t + e(b + "ls2.gamma") * mlp
        if i in take:
            grids.append(t.transpose(1, 2).reshape(n, d, gh, gw))
        i += 1

    def dec(z, name):
        z = F.relu(F.conv2d(z, s[name + ".0.weight"], s[name + ".0.bias"], padding=1))
        z = F.relu(F.conv2d(z, s[name + ".2.weight"], s[name + ".2.bias"], padding=1))
        return F.interpolate(z, scale_factor=2, mode="bilinear", align_corners=True)

    def skip(z, name, times):
        for j in range(times):
            z = F.conv_transpose2d(z, s[f"{name}.{j}.weight"], s[f"{name}.{j}.bias"], stride=2)
        return z

    y = dec(grids[3], "decoder4")
    y = dec(y + skip(grids[2], "skip3", 1), "decoder3")
    y = dec(y + skip(grids[1], "skip2", 2), "decoder2")
    y = dec(y + skip(grids[0], "skip1", 3), "decoder1")
    y = F.conv2d(y, s["final_conv.weight"], s["final_conv.bias"])
    if y.shape[-1] != 256:
        y = F.interpolate(y, size=(256, 256), mode="bilinear", align_corners=True)
    return y


def _rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


def _small_state(seed=1):
    return _official_state(seed, dim=SMALL["dim"], hidden=SMALL["hidden"], r=SMALL["r"],
                           decoder=SMALL["decoder"])


@pytest.fixture(scope="module")
def small_pth(tmp_path_factory):
    path = tmp_path_factory.mktemp("flash") / "model.pth"
    torch.save(_small_state(), path)
    return path


@pytest.mark.slow
def test_official_widths_match_the_reference(tmp_path):
    state = _official_state(seed=0)
    assert len(state) == 252 and sum(v.numel() for v in state.values()) == 23_797_343
    torch.save(state, tmp_path / "model.pth")
    model = load(tmp_path / "model.pth")
    assert isinstance(model, GigaTIMEFlash) and not model.training
    assert model.config["heads"] == 6 and model.config["mlp_hidden"] == 1024
    assert model.config["img_size"] == 224 and model.config["lora_r"] == 8
    x = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = _reference_forward(state, x)
        got = model(x)
    assert got.shape == (1, 23, 256, 256)
    assert _rel(got, expected) < 1e-5
    card = model.card
    assert card.architecture == "gigatime-flash" and card.window == 256
    assert card.input_mpp == 0.25 and card.channels == list(CHANNEL_NAMES)
    assert len(card.sha256) == 64 and card.weights_file == "model.pth"


@pytest.mark.parametrize("layout", ["peft", "module.", "module.module.", "plain encoder.",
                                    "virtime", "state_dict"])
def test_key_layouts_load_alike(layout, small_pth, tmp_path):
    state = torch.load(small_pth, weights_only=True)
    if layout == "module.":
        state = {"module." + k: v for k, v in state.items()}
    elif layout == "module.module.":
        state = {"module.module." + k: v for k, v in state.items()}
    elif layout in ("plain encoder.", "virtime"):
        state = {k.replace(ENC, "encoder."): v for k, v in state.items()}
        if layout == "virtime":
            state = {canonical_key(k): v for k, v in state.items()}
            assert not any(".base_layer." in k or ".default." in k for k in state)
    elif layout == "state_dict":
        state = {"state_dict": state}
    torch.save(state, tmp_path / "model.pth")
    model = load(tmp_path / "model.pth")
    x = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert _rel(model(x), _reference_forward(_small_state(), x, heads=1)) < 1e-5


def test_wrong_shape_is_refused_naming_key_and_shapes(small_pth, tmp_path):
    state = torch.load(small_pth, weights_only=True)
    state["decoder3.2.weight"] = torch.zeros(8, 8, 5, 5)
    key = ENC + "blocks.4.attn.proj.lora_B.default.weight"
    state[key] = torch.zeros(64, 5)
    torch.save(state, tmp_path / "model.pth")
    with pytest.raises(CheckpointError) as info:
        load(tmp_path / "model.pth")
    msg = str(info.value)
    assert "model.pth" in msg and "2 tensors with wrong shapes" in msg
    assert "decoder3.2.weight: checkpoint (8, 8, 5, 5), model (8, 8, 3, 3)" in msg
    assert f"encoder.blocks.4.attn.proj.lora_B.weight (checkpoint key {key}): " \
           "checkpoint (64, 5), model (64, 4)" in msg


def test_missing_unexpected_and_ignorable_tensors(small_pth, tmp_path, caplog):
    state = torch.load(small_pth, weights_only=True)
    missing = dict(state)
    del missing["skip2.1.bias"]
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match=r"1 missing tensors: skip2\.1\.bias"):
        load(tmp_path / "missing.pth")
    extra = {**state, "decoder0.0.weight": torch.zeros(3)}
    torch.save(extra, tmp_path / "extra.pth")
    with pytest.raises(CheckpointError, match=r"unexpected tensors: decoder0\.0\.weight"):
        load(tmp_path / "extra.pth")
    model = load(tmp_path / "extra.pth", strict=False)
    assert model.card.training["unused_tensors"] == ["decoder0.0.weight"]
    assert "decoder0.0.weight" in caplog.text
    # A timm classifier head the Flash forward never reads: loaded nowhere, listed.
    head = {**state, ENC + "head.weight": torch.zeros(1000, 64), ENC + "head.bias": torch.zeros(1000)}
    torch.save(head, tmp_path / "head.pth")
    assert load(tmp_path / "head.pth").card.training["unused_tensors"] == [
        ENC + "head.bias", ENC + "head.weight"]
    # Two keys naming the same tensor.
    twice = {**state, "module." + ENC + "pos_embed": state[ENC + "pos_embed"]}
    with pytest.raises(CheckpointError, match="both name 'encoder.pos_embed'"):
        load_flash_state_dict(GigaTIMEFlash(dim=64, heads=1), twice)


def test_architecture_told_apart_by_keys():
    arch, cfg = detect_architecture(_small_state())
    assert arch == "gigatime-flash"
    assert cfg == {"in_channels": 3, "num_classes": 23, "img_size": 224, "patch": 16, "dim": 64,
                   "depth": 12, "heads": 1, "mlp_hidden": 64, "lora_r": 4,
                   "decoder": [16, 8, 8, 8]}
    assert detect_architecture(GigaTIME(filters=(4, 8, 16, 32, 64)).state_dict())[0] == "gigatime"
    vit_only = {k: v for k, v in _small_state().items() if k.startswith(ENC)}
    with pytest.raises(CheckpointError, match="decoder4.0.weight"):
        detect_architecture(vit_only)


def test_config_json_beside_the_weights(small_pth, tmp_path):
    torch.save(torch.load(small_pth, weights_only=True), tmp_path / "model.pth")
    (tmp_path / "config.json").write_text(json.dumps({"num_classes": 23, "model": "flash"}))
    card = load(tmp_path / "model.pth").card
    assert card.training["source_config"] == {"num_classes": 23, "model": "flash"}
    (tmp_path / "config.json").write_text('{"num_classes": NaN}')
    with pytest.raises(CheckpointError, match="config.json"):
        load(tmp_path / "model.pth")
    (tmp_path / "config.json").write_text('{"num_classes": 21}')
    with pytest.raises(CheckpointError, match="num_classes 21"):
        load(tmp_path / "model.pth")


def test_virtime_and_official_saves_round_trip(small_pth, tmp_path):
    model = load(small_pth)
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        expected = model(x)
    card = save(model, tmp_path / "flash")
    assert card.architecture == "gigatime-flash" and card.config["decoder"] == [16, 8, 8, 8]
    again = load(tmp_path / "flash.safetensors")
    save_official_layout(model, tmp_path / "official.pth")
    official = torch.load(tmp_path / "official.pth", weights_only=True)
    assert set(official) == set(_small_state())  # the published names, every one
    with torch.no_grad():
        assert torch.equal(again(x), expected)
        assert torch.equal(load(tmp_path / "official.pth")(x), expected)


def test_position_grid_is_folded_and_refreshed():
    model = GigaTIMEFlash(dim=64, heads=1, mlp_hidden=64, decoder=(16, 8, 8, 8)).eval()
    enc = model.encoder
    assert enc.pos_grid.shape == (1, 256, 64) and "encoder.pos_grid" not in model.state_dict()
    assert torch.allclose(enc.pos_grid, enc.resize_pos(16, 16))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["encoder.pos_embed"].normal_()
    model.load_state_dict(state)
    assert torch.allclose(enc.pos_grid, enc.resize_pos(16, 16))  # refolded after the load
    with torch.no_grad():
        enc.pos_embed.mul_(2)
    model.eval()  # re-entering eval refolds
    assert torch.allclose(enc.pos_grid, enc.resize_pos(16, 16))
    model.fold_position_embedding(128)
    assert enc.pos_grid.shape == (1, 64, 64)
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        folded = model(x)
        model.train()
        dynamic = model(x)
    assert folded.shape == (1, 23, 256, 256)  # the official resize to 256
    assert torch.allclose(folded, dynamic, atol=1e-6)


def test_lora_update_and_official_names():
    layer = LoRALinear(6, 5, r=2, alpha=4)
    x = torch.randn(3, 6)
    assert torch.allclose(layer(x), x @ layer.weight.T + layer.bias)
    torch.nn.init.normal_(layer.lora_B.weight)
    expected = x @ (layer.weight + 2.0 * layer.lora_B.weight @ layer.lora_A.weight).T + layer.bias
    assert torch.allclose(layer(x), expected, atol=1e-5)
    assert official_key("encoder.blocks.3.attn.qkv.lora_B.weight") == \
        ENC + "blocks.3.attn.qkv.lora_B.default.weight"
    assert official_key("encoder.blocks.3.attn.proj.bias") == ENC + "blocks.3.attn.proj.base_layer.bias"
    assert official_key("encoder.blocks.3.mlp.fc1.bias") == ENC + "blocks.3.mlp.fc1.bias"
    assert official_key("skip1.2.weight") == "skip1.2.weight"
    with pytest.raises(ValueError, match="take"):
        GigaTIMEFlash(depth=6)


def test_merge_lora_replaces_adapters_by_one_linear():
    """``merge_lora`` against a float64 numpy computation of base + scale * B(A(x))."""
    import numpy as np

    from virtime.models.lora import has_lora, merge_lora

    block = torch.nn.Sequential(LoRALinear(6, 5, r=2, alpha=4), torch.nn.GELU(),
                                torch.nn.Sequential(LoRALinear(5, 4, r=3, alpha=3)))
    for m in block.modules():
        if isinstance(m, LoRALinear):
            torch.nn.init.normal_(m.lora_B.weight)
    x = torch.randn(7, 6)
    a, b = block[0], block[2][0]
    npx = x.double().numpy()

    def ref(layer, v):
        w, bias = layer.weight.detach().double().numpy(), layer.bias.detach().double().numpy()
        la, lb = (layer.lora_A.weight.detach().double().numpy(),
                  layer.lora_B.weight.detach().double().numpy())
        return v @ w.T + bias + layer.alpha / layer.r * (v @ la.T) @ lb.T

    h = ref(a, npx)
    h = 0.5 * h * (1 + np.vectorize(math.erf)(h / math.sqrt(2)))  # exact GELU
    expected = ref(b, h)
    assert merge_lora(block) == 2 and not has_lora(block)
    assert type(block[0]) is torch.nn.Linear and type(block[2][0]) is torch.nn.Linear
    with torch.no_grad():
        np.testing.assert_allclose(block(x).double().numpy(), expected, rtol=1e-5, atol=1e-5)
