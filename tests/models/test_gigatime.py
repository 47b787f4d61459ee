"""GigaTIME UNet++: official parameter names, counts and FLOPs against independent figures."""

from __future__ import annotations

import pytest
import torch

from virtime.models import GigaTIME, load, save_official_layout
from virtime.models.checkpoints import read_state_dict

NODES = ["0_0", "1_0", "2_0", "3_0", "4_0", "0_1", "1_1", "2_1", "3_1", "0_2", "1_2", "2_2",
         "0_3", "1_3", "0_4"]


def _official_keys() -> set[str]:
    keys = set()
    for node in NODES:
        for conv in ("conv1", "conv2"):
            keys |= {f"conv{node}.{conv}.weight", f"conv{node}.{conv}.bias"}
        for bn in ("bn1", "bn2"):
            keys |= {f"conv{node}.{bn}.{s}" for s in
                     ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")}
    return keys | {"final.weight", "final.bias"}


def _expected_params(filters=(32, 64, 128, 256, 512), cin=3, cout=23) -> int:
    """UNet++ parameter count from the node wiring of the issue, written out independently."""
    total = 0
    for node in NODES:
        i, j = map(int, node.split("_"))
        f = filters[i]
        inp = (cin if i == 0 else filters[i - 1]) if j == 0 else f * j + filters[i + 1]
        total += (9 * inp * f + f) + (9 * f * f + f) + 4 * f  # two convs, two BN (w, b)
    return total + filters[0] * cout + cout


def test_official_names_round_trip_strict():
    model = GigaTIME()
    state = model.state_dict()
    assert set(state) == _official_keys()
    fresh = GigaTIME()
    fresh.load_state_dict(state, strict=True)
    x = torch.randn(1, 3, 32, 32)
    model.eval(), fresh.eval()
    with torch.no_grad():
        assert torch.equal(model(x), fresh(x))


def test_parameter_count_matches_paper():
    n = sum(p.numel() for p in GigaTIME().parameters())
    assert n == _expected_params()
    assert abs(n / 1e6 - 9.16) < 0.01


def test_flops_per_window_is_69_gflop():
    """Hook counter: 2 x multiply-adds of every conv; convs scale exactly with pixel count, so a
    64x64 input times 16 equals a 256x256 window."""
    model = GigaTIME().eval()
    macs = []

    def hook(mod, inp, out):
        k = mod.weight.shape[1] * mod.weight.shape[2] * mod.weight.shape[3]
        macs.append(out.numel() * k)

    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.register_forward_hook(hook)
    with torch.no_grad():
        model(torch.zeros(1, 3, 64, 64))
    gflop = 2 * sum(macs) * (256 // 64) ** 2 / 1e9
    assert gflop == pytest.approx(69.0, rel=0.01)  # 69 GFLOP = 2 x 34.5 G multiply-adds


def test_official_layout_checkpoint_loads(tmp_path):
    model = GigaTIME(filters=(4, 8, 16, 32, 64))
    with torch.no_grad():  # non-default statistics must survive the trip
        model.conv2_1.bn1.running_mean.uniform_(-1, 1)
    path = tmp_path / "model.pth"
    save_official_layout(model, path)
    assert set(read_state_dict(path)) == _official_keys()
    loaded = load(path)
    assert loaded.filters == (4, 8, 16, 32, 64)
    assert loaded.card.architecture == "gigatime"
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), loaded(x))


@pytest.mark.parametrize("wrap", ["state_dict", "module"])
def test_wrapped_layouts_load(tmp_path, wrap):
    model = GigaTIME(filters=(4, 8, 16, 32, 64))
    state = model.state_dict()
    obj = {"state_dict": state, "epoch": 3} if wrap == "state_dict" else {
        f"module.{k}": v for k, v in state.items()}
    torch.save(obj, tmp_path / "m.pth")
    loaded = load(tmp_path / "m.pth")
    assert torch.equal(loaded.state_dict()["final.weight"], state["final.weight"])


def test_forward_shape_and_sizes():
    model = GigaTIME(filters=(4, 8, 16, 32, 64)).eval()
    with torch.no_grad():
        y = model(torch.randn(2, 3, 48, 64))
    assert y.shape == (2, 23, 48, 64)
