"""Checkpoint safety, errors, safetensors + model card."""

from __future__ import annotations

import hashlib
import json
import pickle

import pytest
import torch

from virtime.errors import CheckpointError
from virtime.models import GigaTIME, ModelCard, load, save
from virtime.models.card import confidence_tier


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_code_executing_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    with open(path, "wb") as fh:
        pickle.dump({"conv0_0.conv1.weight": _Evil(marker)}, fh, protocol=2)
    with pytest.raises(CheckpointError, match="refused"):
        load(path)
    assert not marker.exists()


def test_corrupt_and_missing_files(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match="bad.pth"):
        load(bad)
    with pytest.raises(CheckpointError, match="not found"):
        load(tmp_path / "nope.pth")
    bad_st = tmp_path / "bad.safetensors"
    bad_st.write_bytes(b"{}")
    with pytest.raises(CheckpointError):
        load(bad_st)


def test_mismatched_keys_are_listed(tmp_path):
    state = GigaTIME(filters=(4, 8, 16, 32, 64)).state_dict()
    del state["conv1_1.bn2.running_var"]
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "m.pth")
    with pytest.raises(CheckpointError) as info:
        load(tmp_path / "m.pth")
    msg = str(info.value)
    assert "conv1_1.bn2.running_var" in msg and "extra.weight" in msg


def test_unknown_architecture(tmp_path):
    torch.save({"foo.weight": torch.zeros(2)}, tmp_path / "m.pt")
    with pytest.raises(CheckpointError, match="no known architecture"):
        load(tmp_path / "m.pt")


def test_safetensors_and_card_round_trip(tmp_path):
    model = GigaTIME(filters=(4, 8, 16, 32, 64))
    card = ModelCard(architecture="gigatime", config={}, input_mpp=0.5, window=128,
                     training={"tiles": 10})
    card.with_evaluation({"DAPI": 0.7, "CK": 0.4, "CD20": 0.1, "TRITC": float("nan")})
    written = save(model, tmp_path / "run" / "m", card=card)
    weights = tmp_path / "run" / "m.safetensors"
    data = json.loads((tmp_path / "run" / "m.json").read_text())
    assert data["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest() == written.sha256
    assert data["config"]["filters"] == [4, 8, 16, 32, 64]
    assert data["confidence_tiers"] == {"DAPI": "high", "CK": "medium", "CD20": "low",
                                        "TRITC": "unknown"}
    loaded = load(weights)
    assert loaded.card.input_mpp == 0.5 and loaded.card.window == 128
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), loaded(x))


def test_tier_cutoffs():
    assert [confidence_tier(r) for r in (0.5, 0.49, 0.3, 0.29, float("nan"))] == [
        "high", "medium", "medium", "low", "unknown"]
