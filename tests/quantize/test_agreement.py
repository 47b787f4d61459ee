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
    assert DEFAULT_GATE == Int8Gate(0.95, 0.005, 150)


def _plant(maps: np.ndarray, slide: slice, channel: int, pixels: np.ndarray) -> None:
    """Sets ``pixels`` (flat indices into one slide's windows) of ``channel`` positive (0.8)."""
    windows = maps[slide, channel]
    windows[np.unravel_index(pixels, windows.shape)] = 0.8


def test_rare_channels_are_held_to_density_not_dice(rng) -> None:
    """Planted maps: a rare channel with a few disagreeing pixels passes; a common channel with
    Dice 0.9 fails; a rare channel whose density moves by > 0.005 fails; the Dice floor holds from
    150 positive pixels in fp32 or INT8. Dice, densities and counts are checked against numpy."""
    from virtime.channels import CHANNEL_NAMES
    from virtime.models.int8 import describe_dice_gating, too_rare_for_dice

    n, hw = 8, 64  # slides a (windows 0-3) and b (4-7): 16384 pixels each
    a, b = slice(0, 4), slice(4, 8)
    ref = np.full((n, len(CHANNEL_NAMES), hw, hw), 0.2, np.float32)
    for name in ("DAPI", "CK", "Ki67", "PD-L1"):  # common channels, identical in both maps
        ref[:, CHANNEL_NAMES.index(name)] = rng.uniform(size=(n, hw, hw)) > 0.7
    test = ref.copy()
    idx = CHANNEL_NAMES.index
    px = rng.permutation(4 * hw * hw)  # distinct pixels of one slide, drawn once
    # rare and fine: 40 px; INT8 loses 6 and adds 4 (Dice 68 / 78 = 0.872)
    _plant(ref, a, idx("CD16"), px[:40])
    _plant(test, a, idx("CD16"), np.concatenate([px[6:40], px[40:44]]))
    # common with Dice 0.9: 4000 px; INT8 keeps 3600 and adds 400 (density unchanged)
    _plant(ref, a, idx("CD3"), px[:4000])
    _plant(test, a, idx("CD3"), np.concatenate([px[:3600], px[4000:4400]]))
    # rare with a large density change: 10 px in fp32, INT8 adds 100 on slide b (0.0061)
    _plant(ref, b, idx("Actin-D"), px[:10])
    _plant(test, b, idx("Actin-D"), px[:110])
    # the floor: 149 / 150 px in fp32, INT8 loses 20 (Dice 258 / 278, 260 / 280)
    _plant(ref, a, idx("CD20"), px[:149])
    _plant(test, a, idx("CD20"), px[20:149])
    _plant(ref, a, idx("CD68"), px[:150])
    _plant(test, a, idx("CD68"), px[20:150])
    # none in fp32, 160 px in INT8 over both slides (density +0.0049 each): held to Dice
    _plant(test, a, idx("CD8"), px[:80])
    _plant(test, b, idx("CD8"), px[:80])

    acc = ChannelAgreement(0.5)
    acc.update(ref[a], test[a], "a")
    acc.update(ref[b], test[b], "b")
    got = acc.summary()
    for name in ("CD16", "CD3", "Actin-D", "CD20", "CD68", "CD8"):
        c = idx(name)
        pa, pb = ref[:, c] > 0.5, test[:, c] > 0.5
        dice = 2 * (pa & pb).sum() / (pa.sum() + pb.sum())
        deltas = [pb[s].mean() - pa[s].mean() for s in (a, b)]
        m = got[name]
        assert m["dice"] == pytest.approx(dice, abs=1e-12), name
        assert m["density_delta"] == pytest.approx(deltas[int(np.argmax(np.abs(deltas)))],
                                                   abs=1e-12), name
        assert (m["positive_pixels_fp32"], m["positive_pixels_int8"]) == (pa.sum(), pb.sum())
    assert got["CD16"]["dice"] == pytest.approx(68 / 78)
    assert got["CD3"]["dice"] == pytest.approx(0.9)
    assert got["Actin-D"]["density_delta"] == pytest.approx(100 / 16384)

    assert gate_failures(got) == ["CD68 Dice 0.929", "CD3 Dice 0.900",
                                  "CD8 Dice 0.000", "Actin-D |delta density| 0.0061"]
    rare = too_rare_for_dice(got)
    held = {"DAPI", "CK", "Ki67", "PD-L1", "CD3", "CD68", "CD8"}
    assert set(rare) == set(PROTEIN_CHANNELS) - held  # the unplanted ones have 0 px
    assert {k: rare[k] for k in ("CD16", "CD20", "Actin-D")} == {"CD16": 40, "CD20": 149,
                                                                 "Actin-D": 110}
    line = describe_dice_gating(got)
    assert line.startswith("Dice gated on 7 protein channels; too rare to gate by Dice")
    assert "CD16 (40 px)" in line and "Actin-D (110 px)" in line
    # a card without counts (written before them) is held to Dice everywhere
    old = {k: {"dice": v["dice"], "density_delta": v["density_delta"]} for k, v in got.items()}
    assert "CD16 Dice 0.872" in gate_failures(old) and too_rare_for_dice(old) == {}
    # the floor is the gate's: a stricter gate holds the 40-px channel to Dice again
    assert "CD16 Dice 0.872" in gate_failures(got, Int8Gate(min_positive_pixels=40))
