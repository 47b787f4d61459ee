"""The speed cost of the layers ``virtime quantize`` leaves in fp32 (#27).

``virtime quantize`` keeps the input block (the first two convolutions, which see the image at
full resolution) in fp32 by default, because the demo translator's rare immune channels lost
Dice with it in INT8. This measures what that costs: the bare OpenVINO engine on one batch of
256-px windows for fp32, all-INT8 (``--keep-fp32 none``) and INT8 with the input block in fp32
(``--keep-fp32 input``; also with OpenVINO's ``INFERENCE_PRECISION_HINT=f32``, which makes the
CPU plugin run the unquantized layers in f32 rather than bf16 on CPUs with bf16), for the
official-width GigaTIME (random weights: speed only) and the bundled demo translator. All
engines are compiled in one process and timed round by round, the order reversed every round, so a
shared machine slows them alike: compare the ratios.

``python benchmarks/bench_int8_fp32_layers.py [ROUNDS]`` prints a Markdown table.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BATCH = 4
WINDOW = 256
THREADS = 2


def _windows(work: Path, n: int) -> np.ndarray:
    from virtime.quantize import calibration_windows
    from virtime.simulate.slides import make_slide

    slides = [make_slide(work / f"s{i}.svs", 1536, 1536, mpp=0.5, fmt="aperio", seed=i)
              for i in range(2)]
    w = calibration_windows(slides, model_mpp=0.5, window=WINDOW, calibration_tiles=n,
                            held_out_tiles=BATCH, seed=0)
    return np.concatenate([w.calibration, w.held_out])


def _models():  # noqa: ANN202 - (name, torch module with a card)
    import torch

    from virtime.models import GigaTIME, ModelCard, load_demo

    torch.manual_seed(0)
    official = GigaTIME().eval()
    official.card = ModelCard(architecture="gigatime", config=official.config, input_mpp=0.5,
                              window=WINDOW)
    return [("GigaTIME (official width)", official), ("demo translator", load_demo())]


def _compiled(model, fp32: bool):  # noqa: ANN001, ANN202 - OpenVINO objects
    import openvino as ov

    config = {"INFERENCE_NUM_THREADS": THREADS, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
    if fp32:
        config["INFERENCE_PRECISION_HINT"] = "f32"  # as the engine does: no bf16 lowering
    return ov.Core().compile_model(model, "CPU", config)


def run(rounds: int = 5) -> str:
    import openvino as ov

    from virtime.engines.onnx_export import ensure_onnx
    from virtime.quantize.ptq import QuantizeConfig, quantize_onnx

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = _windows(work, 8)
        calib, x = data[:-BATCH], data[-BATCH:]
        engines, kept = {}, {}
        for name, model in _models():
            onnx = ensure_onnx(model, work / "cache", window=WINDOW)
            engines[(name, "fp32")] = _compiled(ov.Core().read_model(str(onnx)), fp32=True)
            for keep in ("none", "input"):
                q, layers = quantize_onnx(onnx, calib, QuantizeConfig(keep_fp32=keep))
                engines[(name, f"int8, --keep-fp32 {keep}")] = _compiled(q, fp32=False)
                kept[name] = layers or kept.get(name, [])
            # the unquantized layers forced to f32 (the CPU plugin's default is bf16 where the
            # CPU has it: then the "fp32" layers of the two rows above ran in bf16)
            engines[(name, "int8, --keep-fp32 input, f32 hint")] = _compiled(q, fp32=True)
        for c in engines.values():
            c({0: x})  # warm-up
        times: dict[tuple[str, str], list[float]] = {k: [] for k in engines}
        for r in range(rounds):
            for key in (list(engines) if r % 2 == 0 else list(reversed(engines))):
                t0 = time.perf_counter()
                engines[key]({0: x})
                times[key].append(BATCH / (time.perf_counter() - t0))
    lines = ["| model | engine | windows/s (median) | runs | vs fp32 | vs all-INT8 |",
             "|---|---|---:|---|---:|---:|"]
    for (name, label), v in times.items():
        med = statistics.median(v)
        base = statistics.median(times[(name, "fp32")])
        int8 = statistics.median(times[(name, "int8, --keep-fp32 none")])
        lines.append(f"| {name} | {label} | {med:.3f} | {', '.join(f'{t:.3f}' for t in v)} | "
                     f"{med / base:.2f}x | {med / int8:.2f}x |")
    lines += [f"\nfp32 layers of --keep-fp32 input, {n}: {', '.join(k)}" for n, k in kept.items()]
    return "\n".join(lines)


def test_int8_fp32_layers() -> None:
    import pytest

    pytest.importorskip("nncf")
    print(run(rounds=1))


if __name__ == "__main__":
    print(run(int(sys.argv[1]) if len(sys.argv) > 1 else 5))
