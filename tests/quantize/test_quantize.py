"""``virtime quantize`` on a tiny translator and simulated slides: the card's agreement numbers
against an independent computation (torch fp32, the OpenVINO runtime on the IR, plain numpy),
the accuracy gate at translation, and one-line errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("openvino")
pytest.importorskip("nncf")

from virtime.cli import main  # noqa: E402

SLIDE_MPP = 0.25


@pytest.fixture(scope="module")
def slides(tmp_path_factory) -> list[Path]:
    from virtime.simulate.slides import make_slide

    folder = tmp_path_factory.mktemp("calib")
    return [make_slide(folder / f"s{i}.svs", 1024, 1024, mpp=SLIDE_MPP, fmt="aperio", seed=10 + i)
            for i in range(2)]


@pytest.fixture(scope="module")
def fp32_weights(tmp_path_factory) -> Path:
    """A tiny GigaTIME standardised on simulated tissue, so every channel's maps straddle 0.5."""
    from tiny_models import standardised_gigatime

    from virtime.models import save
    from virtime.simulate.slides import synthetic_he

    rgb, _ = synthetic_he(256, 256, 0.5, rng=np.random.default_rng(1))
    tiles = np.stack([rgb[y : y + 64, x : x + 64] for y in range(0, 256, 64)
                      for x in range(0, 256, 64)])
    path = tmp_path_factory.mktemp("fp32") / "tiny.safetensors"
    save(standardised_gigatime(tiles), path, input_mpp=0.5, window=64)
    return path


@pytest.fixture(scope="module")
def quantized(slides, fp32_weights, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("int8") / "tiny-int8"
    code = main(["quantize", "--weights", str(fp32_weights), "--calibrate", *map(str, slides),
                 "-o", str(out), "--calibration-tiles", "12", "--held-out-tiles", "12"])
    assert code == 0
    return out.with_suffix(".xml")


def _one_error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(err) == 1, err
    return err[0]


@pytest.mark.slow
def test_card_numbers_match_an_independent_computation(quantized, fp32_weights, slides) -> None:
    import openvino as ov
    import torch
    from scipy.special import expit

    from virtime.channels import PROTEIN_CHANNELS
    from virtime.models import load
    from virtime.quantize import calibration_windows

    card = json.loads(quantized.with_suffix(".json").read_text())
    q = card["quantization"]
    # The same held-out windows (a fixed-seed draw); everything after this is computed here.
    windows = calibration_windows(slides, model_mpp=0.5, window=64, calibration_tiles=12,
                                  held_out_tiles=12, seed=q["seed"])
    with torch.no_grad():
        p32 = expit(load(fp32_weights)(torch.from_numpy(windows.held_out)).numpy())
    compiled = ov.Core().compile_model(str(quantized), "CPU")
    p8 = expit(compiled({0: windows.held_out})[compiled.output(0)])
    owner = np.asarray(windows.held_out_slides)
    assert len(set(owner)) == 2  # both slides are held out, so density is per slide
    straddling, rare = 0, {}
    for c, name in enumerate(card["channels"]):
        a, b = p32[:, c] > 0.5, p8[:, c] > 0.5
        dice = 2 * (a & b).sum() / (a.sum() + b.sum()) if a.sum() + b.sum() else 1.0
        r = np.corrcoef(p32[:, c].ravel(), p8[:, c].ravel())[0, 1]
        deltas = [b[owner == s].mean() - a[owner == s].mean() for s in np.unique(owner)]
        m = q["channels"][name]
        assert m["dice"] == pytest.approx(dice, abs=2e-3), name
        assert m["pearson"] == pytest.approx(r, abs=1e-3), name
        assert m["density_delta"] == pytest.approx(deltas[int(np.argmax(np.abs(deltas)))],
                                                   abs=1e-4), name
        straddling += 0.05 < a.mean() < 0.95
        if name in PROTEIN_CHANNELS and max(a.sum(), b.sum()) < 150:
            rare[name] = int(max(a.sum(), b.sum()))
    assert straddling >= 20  # the comparison is not vacuous: positive and negative pixels
    assert q["gate"] == {"min_dice": 0.95, "max_density_delta": 0.005, "min_positive_pixels": 150}
    assert q["too_rare_for_dice"].keys() == rare.keys()  # counts may differ by a pixel or two
    assert card["sha256"] and q["source_sha256"] and card["input_mpp"] == 0.5


def _int8_in(node, depth: int = 6) -> bool:
    """Whether INT8 reaches ``node``: a FakeQuantize, or an 8-bit integer constant, among the
    ops it is computed from (weights are stored as i8 constants decompressed by Convert and
    Multiply; activations pass a FakeQuantize). ``depth`` bounds the walk to the op's inputs."""
    if node.get_type_name() == "FakeQuantize":
        return True
    if node.get_type_name() == "Constant":
        return node.get_output_element_type(0).get_type_name() in ("i8", "u8")
    if depth == 0 or node.get_type_name() in ("Parameter", "Convolution"):
        return False
    return any(_int8_in(v.get_node(), depth - 1) for v in node.input_values())


@pytest.mark.slow
def test_card_lists_the_layers_left_in_fp32(quantized) -> None:
    import openvino as ov

    q = json.loads(quantized.with_suffix(".json").read_text())["quantization"]
    ir = ov.Core().read_model(str(quantized))
    convs = [op for op in ir.get_ordered_ops() if op.get_type_name() == "Convolution"]
    fp32 = [c.get_friendly_name() for c in convs
            if not any(_int8_in(v.get_node()) for v in c.input_values())]
    int8 = [c for c in convs if _int8_in(c.input_value(0).get_node())
            and _int8_in(c.input_value(1).get_node())]
    assert q["keep_fp32"] == "input" and q["activation_ranges"] == "minmax"
    assert fp32 == q["fp32_layers"] and len(fp32) == 2
    assert len(int8) == len(convs) - 2  # every other convolution runs on INT8 inputs and weights
    # the first fp32 layer reads the image itself
    assert convs[0].get_friendly_name() == fp32[0]
    assert convs[0].input_value(0).get_node().get_type_name() == "Parameter"


def _translate(args: list[str]) -> int:
    return main(["translate", *args, "--quiet", "--no-features"])


@pytest.mark.slow
def test_translate_int8_and_a_failing_card(quantized, slides, tmp_path, capsys) -> None:
    from virtime.channels import PROTEIN_CHANNELS
    from virtime.models.int8 import load_int8

    card_path = quantized.with_suffix(".json")
    card = json.loads(card_path.read_text())
    failing = tmp_path / "failing"
    for suffix in (".xml", ".bin"):
        failing.with_suffix(suffix).write_bytes(quantized.with_suffix(suffix).read_bytes())
    card["quantization"]["channels"][PROTEIN_CHANNELS[0]]["dice"] = 0.5  # planted loss
    failing.with_suffix(".json").write_text(json.dumps(card))
    xml = str(failing.with_suffix(".xml"))
    base = [str(slides[0]), "--weights", xml, "--precision", "int8"]

    assert _translate([*base, "-o", str(tmp_path / "refused")]) == 2
    line = _one_error_line(capsys)
    assert "fails the accuracy gate" in line and f"{PROTEIN_CHANNELS[0]} Dice 0.500" in line
    assert "--accept-int8-loss" in line and not (tmp_path / "refused").exists()

    assert _translate([*base, "-o", str(tmp_path / "accepted"), "--accept-int8-loss"]) == 0
    summary = json.loads(next((tmp_path / "accepted").glob("*/summary.json")).read_text())
    assert "openvino" in json.dumps(summary) and "int8" in json.dumps(summary)

    for m in card["quantization"]["channels"].values():  # a card within the gate is loaded
        m.update(dice=0.951, density_delta=-0.005)
    failing.with_suffix(".json").write_text(json.dumps(card))
    assert load_int8(xml).card.quantization["channels"][PROTEIN_CHANNELS[0]]["dice"] == 0.951


@pytest.mark.slow
def test_int8_model_without_card_or_altered(quantized, slides, tmp_path, capsys) -> None:
    lone = tmp_path / "lone"
    for suffix in (".xml", ".bin"):
        lone.with_suffix(suffix).write_bytes(quantized.with_suffix(suffix).read_bytes())
    base = [str(slides[0]), "-o", str(tmp_path / "out"), "--precision", "int8"]
    assert _translate([*base, "--weights", str(lone.with_suffix(".xml"))]) == 2
    assert "without its model card lone.json" in _one_error_line(capsys)

    lone.with_suffix(".json").write_text(quantized.with_suffix(".json").read_text())
    data = bytearray(lone.with_suffix(".bin").read_bytes())
    data[-1] ^= 0xFF
    lone.with_suffix(".bin").write_bytes(bytes(data))
    assert _translate([*base, "--weights", str(lone.with_suffix(".xml"))]) == 2
    assert "do not match the sha256" in _one_error_line(capsys)


@pytest.mark.slow
def test_int8_on_a_backend_without_it(quantized, slides, tmp_path, capsys) -> None:
    args = [str(slides[0]), "-o", str(tmp_path / "o"), "--weights", str(quantized),
            "--precision", "int8", "--backend", "onnxruntime", "--accept-int8-loss"]
    assert _translate(args) == 2
    assert "the onnxruntime backend cannot run INT8" in _one_error_line(capsys)


def test_quantize_bad_calibration_slides(fp32_weights, slides, tmp_path, capsys) -> None:
    from virtime.simulate.slides import make_slide, write_flat_slide

    blank = write_flat_slide(tmp_path / "blank.tif", np.full((4, 4, 3), 245, np.uint8),
                             mpp=0.25)
    coarse = make_slide(tmp_path / "coarse.svs", 512, 512, mpp=3.0, fmt="aperio", seed=3)
    nompp = make_slide(tmp_path / "nompp.tif", 512, 512, mpp=0.5, fmt="generic-no-mpp", seed=4)
    cases = [
        ([str(blank)], "blank.tif: no tissue found"),
        ([str(coarse)], "coarse.svs: mpp 3"),
        ([str(nompp)], "nompp.tif"),
        ([str(slides[0]), "--held-out-tiles", "5000"], "too few tissue tiles"),
    ]
    for calibrate, expected in cases:
        code = main(["quantize", "--weights", str(fp32_weights), "--calibrate", *calibrate,
                     "-o", str(tmp_path / "q")])
        assert code == 2
        assert expected in _one_error_line(capsys)
    assert not list(tmp_path.glob("q*"))  # nothing written


@pytest.mark.slow
def test_quantize_says_which_channels_were_dice_gated(fp32_weights, slides, tmp_path,
                                                      capsys) -> None:
    from virtime.channels import PROTEIN_CHANNELS

    out = tmp_path / "q"
    assert main(["quantize", "--weights", str(fp32_weights), "--calibrate", *map(str, slides),
                 "-o", str(out), "--calibration-tiles", "6", "--held-out-tiles", "6"]) == 0
    printed = capsys.readouterr().out
    channels = json.loads(out.with_suffix(".json").read_text())["quantization"]["channels"]
    rare = [k for k in PROTEIN_CHANNELS if max(channels[k]["positive_pixels_fp32"],
                                               channels[k]["positive_pixels_int8"]) < 150]
    gated = len(PROTEIN_CHANNELS) - len(rare)
    assert f"Dice gated on {gated} protein channel" in printed
    for name in rare:
        count = max(channels[name]["positive_pixels_fp32"], channels[name]["positive_pixels_int8"])
        assert f"{name} ({count} px)" in printed
    lowest = min(channels[k]["dice"] for k in PROTEIN_CHANNELS if k not in rare)
    assert "lowest Dice of a Dice-gated channel" in printed and f"{lowest:.3f}" in printed
