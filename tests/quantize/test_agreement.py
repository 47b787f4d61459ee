"""Per-channel agreement of two probability maps and the INT8 accuracy gate, against numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest

from virtime.channels import PROTEIN_CHANNELS
from virtime.models.int8 import DEFAULT_GATE, Int8Gate, gate_failures
from virtime.quantize.agreement import ChannelAgreement


def _reference(ref: np.ndarray, test: np.ndarray, slides: np.ndarray, thr: float) -> dict:
    """Dice, Pearson and per-slide densities computed directly on the full arrays."""
    out = {}
    for c in range(ref.shape[1]):
        a, b = ref[:, c].ravel(), test[:, c].ravel()
        pa, pb = a > thr, b > thr
        dice = 2 * np.logical_and(pa, pb).sum() / (pa.sum() + pb.sum()) if pa.sum() + pb.sum() \
            else 1.0
        deltas = [(test[slides == s, c] > thr).mean() - (ref[slides == s, c] > thr).mean()
                  for s in np.unique(slides)]
        out[c] = (dice, np.corrcoef(a, b)[0, 1], deltas[int(np.argmax(np.abs(deltas)))],
                  pa.mean())
    return out


def test_agreement_matches_numpy(rng) -> None:
    n, c, hw = 10, 5, 12
    ref = rng.uniform(size=(n, c, hw, hw)).astype(np.float32)
    test = np.clip(ref + rng.normal(0, 0.1, ref.shape), 0, 1).astype(np.float32)
    test[:, 4] = ref[:, 4]  # one channel identical: Dice 1, r 1, no density change
    test[:, 2] *= 0.5  # one channel shifted: a large density change
    slides = np.array(["a"] * 4 + ["b"] * 6)
    acc = ChannelAgreement(0.5, channels=tuple(f"ch{i}" for i in range(c)))
    for start, stop in ((0, 3), (3, 4), (4, 10)):  # batches of uneven size, one slide each
        acc.update(ref[start:stop], test[start:stop], str(slides[start]))
    got = acc.summary()
    expected = _reference(ref, test, slides, 0.5)
    for i in range(c):
        dice, r, delta, density = expected[i]
        m = got[f"ch{i}"]
        assert m["dice"] == pytest.approx(dice, abs=1e-12)
        assert m["pearson"] == pytest.approx(r, abs=1e-9)
        assert m["density_delta"] == pytest.approx(delta, abs=1e-12)
        assert m["density_fp32"] == pytest.approx(density, abs=1e-12)
    assert got["ch4"]["dice"] == 1.0 and got["ch4"]["density_delta"] == 0.0
    assert got["ch2"]["density_delta"] < -0.2


def test_agreement_edge_cases() -> None:
    acc = ChannelAgreement(0.5, channels=("x", "y"))
    ref = np.zeros((1, 2, 4, 4), np.float32)
    test = ref.copy()
    test[0, 1, 0, 0] = 0.9  # y: one false positive pixel in 16
    acc.update(ref, test, "s")
    got = acc.summary()
    assert got["x"]["dice"] == 1.0 and got["x"]["pearson"] is None  # constant maps: no r
    assert got["y"]["dice"] == 0.0 and got["y"]["density_delta"] == pytest.approx(1 / 16)
    with pytest.raises(ValueError, match="no tiles"):
        ChannelAgreement().summary()


def test_gate_names_each_failing_protein_channel() -> None:
    good = {"dice": 0.99, "density_delta": 0.001}
    channels = {name: dict(good) for name in PROTEIN_CHANNELS}
    assert gate_failures(channels) == []
    cd8 = PROTEIN_CHANNELS[3]
    channels[cd8] = {"dice": 0.94, "density_delta": -0.006}
    channels["TRITC"] = {"dice": 0.1, "density_delta": 0.5}  # background: not gated
    assert gate_failures(channels) == [f"{cd8} Dice 0.940", f"{cd8} |delta density| 0.0060"]
    channels[cd8] = {"dice": math.nan, "density_delta": 0.0}
    assert gate_failures(channels) == [f"{cd8} Dice nan"]
    del channels[cd8]
    assert gate_failures(channels) == [f"{cd8} not measured"]
    assert gate_failures({n: {"dice": 0.9, "density_delta": 0.0} for n in PROTEIN_CHANNELS},
                         Int8Gate(min_dice=0.85)) == []
    assert DEFAULT_GATE == Int8Gate(0.95, 0.005)
