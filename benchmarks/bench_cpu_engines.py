"""CPU engines side by side: ONNX Runtime fp32, OpenVINO fp32, OpenVINO INT8 and torch fp32.

For GigaTIME and GigaTIME-Flash at their official widths (random weights, fixed seed):

1. **bare engine, one process**: every engine of both models is built first, then timed on the
   same batch of 256-px windows round by round, the engines interleaved inside each round (so a
   busy machine slows them alike); medians, as ratios to GigaTIME through ONNX Runtime fp32 in the
   same run. Each output is checked against torch fp32 (fp32 engines < 1e-4 relative; INT8 is
   reported as the share of thresholded pixels that agree).
2. **bare engine peak RSS**: each engine in a fresh process (ONNX exports, compiled models and the
   INT8 IR come from the cache of step 1), one warm-up and one timed call; its own peak RSS.
3. **whole ``virtime translate``** on a simulated H&E slide (``virtime.simulate``; no real slide
   is available offline), each engine in a fresh process: wall seconds of the command's
   translation (from its summary), windows/s and peak RSS, ratio to ONNX Runtime fp32 GigaTIME.

INT8 models are made by :func:`virtime.quantize.quantize_translator` calibrated on windows of the
simulated slide (random weights: the agreement numbers say nothing about real accuracy, only the
speed is meaningful). Run it alone (prints Markdown tables)::

    PYTHONPATH=python python benchmarks/bench_cpu_engines.py

``VIRTIME_BENCH_BATCH`` (4), ``VIRTIME_BENCH_ROUNDS`` (3), ``VIRTIME_BENCH_SLIDE_PX`` (1536: a
square slide at 0.25 um/px), ``VIRTIME_BENCH_STEPS`` (``1,2,3``) change the run.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

BATCH = int(os.environ.get("VIRTIME_BENCH_BATCH", "4"))
ROUNDS = int(os.environ.get("VIRTIME_BENCH_ROUNDS", "3"))
SLIDE_PX = int(os.environ.get("VIRTIME_BENCH_SLIDE_PX", "1536"))
STEPS = {int(s) for s in os.environ.get("VIRTIME_BENCH_STEPS", "1,2,3").split(",")}
MODELS = ("gigatime", "gigatime-flash")
#: (label, backend, precision)
ENGINES = (("onnxruntime fp32", "onnxruntime", "fp32"), ("openvino fp32", "openvino", "fp32"),
           ("openvino int8", "openvino", "int8"), ("torch fp32", "torch", "fp32"))


def _model(name: str):  # noqa: ANN202 - torch module with a card
    import torch

    from virtime.models import GigaTIME, GigaTIMEFlash, ModelCard

    torch.manual_seed(0)
    model = (GigaTIMEFlash() if name == "gigatime-flash" else GigaTIME()).eval()
    model.card = ModelCard(architecture=name, config=model.config, input_mpp=0.25, window=256)
    return model


def prepare(work: Path) -> dict[str, dict[str, str]]:
    """Official-width weights (safetensors + card), a simulated slide and each model's INT8 IR."""
    from virtime.models import load, save
    from virtime.quantize import QuantizeConfig, quantize_translator
    from virtime.simulate.slides import make_slide

    slide = work / "slide.svs"
    if not slide.exists():
        make_slide(slide, SLIDE_PX, SLIDE_PX, mpp=0.25, fmt="aperio", seed=7)
    out = {}
    for name in MODELS:
        weights = work / f"{name}.safetensors"
        if not weights.exists():
            save(_model(name), weights, input_mpp=0.25, window=256)
        xml = work / f"{name}-int8.xml"
        if not xml.exists():
            t0 = time.perf_counter()
            quantize_translator(load(weights), [slide], xml,
                                QuantizeConfig(calibration_tiles=16, held_out_tiles=4),
                                cache_dir=work / "cache")
            print(f"quantized {name} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        out[name] = {"weights": str(weights), "int8": str(xml), "slide": str(slide)}
    return out


def _engine(files: dict[str, str], backend: str, precision: str, cache: Path):  # noqa: ANN202
    from virtime.engines import create_engine
    from virtime.models import load
    from virtime.models.int8 import load_int8

    model = (load_int8(files["int8"], accept_loss=True) if precision == "int8"
             else load(files["weights"]))
    return create_engine(model, backend=backend, precision=precision, device="cpu",
                         cache_dir=cache, max_batch=BATCH, window=256)


def bare_engines(files: dict[str, dict[str, str]], cache: Path) -> list[dict]:
    """Step 1: all engines of both models in this process, timed interleaved."""
    import torch
    from scipy.special import expit

    x = np.random.default_rng(0).standard_normal((BATCH, 3, 256, 256)).astype(np.float32)
    engines, checks = {}, {}
    for name in MODELS:
        with torch.inference_mode():
            ref = _model(name)(torch.from_numpy(x)).numpy()
        for label, backend, precision in ENGINES:
            eng = _engine(files[name], backend, precision, cache)
            y = eng.run(x)  # warm-up
            if precision == "int8":
                checks[(name, label)] = f"{((expit(y) > 0.5) == (expit(ref) > 0.5)).mean():.4f} " \
                                        f"of thresholded pixels agree"
            else:
                err = float(np.abs(y - ref).max() / np.abs(ref).max())
                assert err < 1e-4, f"{name} {label}: {err:.2e}"
                checks[(name, label)] = f"{err:.1e} rel."
            engines[(name, label)] = eng
    times: dict[tuple[str, str], list[float]] = {k: [] for k in engines}
    for r in range(ROUNDS):
        order = list(engines) if r % 2 == 0 else list(reversed(engines))
        for key in order:
            t0 = time.perf_counter()
            engines[key].run(x)
            times[key].append(BATCH / (time.perf_counter() - t0))
    for eng in engines.values():
        eng.close()
    return [{"model": m, "engine": e, "windows_per_s": statistics.median(v),
             "runs": [round(t, 3) for t in v], "check": checks[(m, e)]}
            for (m, e), v in times.items()]


_RSS_CHILD = """
import json, sys, time
sys.path.insert(0, {bench!r})
import numpy as np
from bench_cpu_engines import _engine, peak_rss_mib
from pathlib import Path
files = json.loads({files!r})
eng = _engine(files, {backend!r}, {precision!r}, Path({cache!r}))
x = np.random.default_rng(0).standard_normal(({batch}, 3, 256, 256)).astype(np.float32)
eng.run(x)
t0 = time.perf_counter(); eng.run(x); dt = time.perf_counter() - t0
print(json.dumps({{"peak_rss_mib": peak_rss_mib(), "windows_per_s": {batch} / dt}}))
"""


def peak_rss_mib() -> float:
    """This process's peak resident memory (``VmHWM``: per address space, so unlike
    ``ru_maxrss`` it does not inherit the forking parent's peak)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def bare_rss(files: dict[str, dict[str, str]], cache: Path) -> list[dict]:
    """Step 2: each engine alone in a fresh process: its own peak RSS."""
    rows = []
    for name in MODELS:
        for label, backend, precision in ENGINES:
            code = _RSS_CHILD.format(bench=str(Path(__file__).parent), files=json.dumps(
                files[name]), backend=backend, precision=precision, cache=str(cache), batch=BATCH)
            done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                  check=True)
            rows.append({"model": name, "engine": label,
                         **json.loads(done.stdout.strip().splitlines()[-1])})
    return rows


_TRANSLATE_CHILD = """
import json, sys
sys.path.insert(0, {bench!r})
from bench_cpu_engines import peak_rss_mib
from virtime.cli import main
rc = main({argv!r})
print(json.dumps({{"rc": rc, "peak_rss_mib": peak_rss_mib()}}))
"""


def whole_translate(files: dict[str, dict[str, str]], cache: Path, work: Path) -> list[dict]:
    """Step 3: ``virtime translate`` per engine, each in a fresh process."""
    rows = []
    env = {**os.environ, "VIRTIME_CACHE_DIR": str(cache)}
    for name in MODELS:
        for label, backend, precision in ENGINES:
            f = files[name]
            out = work / "translate" / f"{name}-{backend}-{precision}"
            weights = f["int8"] if precision == "int8" else f["weights"]
            argv = ["translate", f["slide"], "-o", str(out), "--weights", weights, "--backend",
                    backend, "--precision", precision, "--device", "cpu", "--quiet",
                    "--no-features", "--force", "--accept-int8-loss"]
            t0 = time.perf_counter()
            code = _TRANSLATE_CHILD.format(bench=str(Path(__file__).parent), argv=argv)
            done = subprocess.run([sys.executable, "-c", code],
                                  capture_output=True, text=True, env=env, check=True)
            wall = time.perf_counter() - t0
            res = json.loads(done.stdout.strip().splitlines()[-1])
            assert res["rc"] == 0, done.stderr[-2000:]
            summary = json.loads(next(out.glob("*/summary.json")).read_text())
            tiles = int(summary.get("tiles_done", 0))
            seconds = float(summary.get("seconds", wall))
            rows.append({"model": name, "engine": label, "tiles": tiles,
                         "translate_s": seconds, "process_s": wall,
                         "windows_per_s": tiles * 4 / seconds,
                         "peak_rss_mib": res["peak_rss_mib"]})
    return rows


def _table(rows: list[dict], cols: list[str], base: dict) -> str:
    key = "windows_per_s"
    lines = ["| model | engine | " + " | ".join(cols) + " | vs GigaTIME ORT fp32 |",
             "|---|---|" + "---:|" * (len(cols) + 1)]
    for r in rows:
        cells = [f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]) for c in cols]
        lines.append(f"| {r['model']} | {r['engine']} | " + " | ".join(cells) +
                     f" | {r[key] / base[key]:.2f}x |")
    return "\n".join(lines)


def run(work: Path) -> str:
    cache = work / "cache"
    files = prepare(work)
    parts = [f"load average at start: {os.getloadavg()[0]:.1f}"]
    if 1 in STEPS:
        rows = bare_engines(files, cache)
        base = next(r for r in rows if r["model"] == "gigatime" and
                    r["engine"] == "onnxruntime fp32")
        parts.append(f"### bare engine, interleaved in one process (batch {BATCH}, {ROUNDS} "
                     f"rounds)\n\n" + _table(rows, ["windows_per_s", "runs", "check"], base))
    if 2 in STEPS:
        rows = bare_rss(files, cache)
        base = next(r for r in rows if r["model"] == "gigatime" and
                    r["engine"] == "onnxruntime fp32")
        parts.append("### bare engine alone in a process: peak RSS\n\n" +
                     _table(rows, ["peak_rss_mib", "windows_per_s"], base))
    if 3 in STEPS:
        rows = whole_translate(files, cache, work)
        base = next(r for r in rows if r["model"] == "gigatime" and
                    r["engine"] == "onnxruntime fp32")
        parts.append(f"### whole `virtime translate` ({SLIDE_PX}x{SLIDE_PX} simulated slide at "
                     f"0.25 um/px)\n\n" + _table(rows, ["tiles", "translate_s", "windows_per_s",
                                                       "peak_rss_mib"], base))
    parts.append(f"load average at end: {os.getloadavg()[0]:.1f}")
    return "\n\n".join(parts)


@pytest.mark.slow
def test_cpu_engines(tmp_path):
    pytest.importorskip("openvino")
    print("\n" + run(tmp_path))


if __name__ == "__main__":
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="bench-cpu-"))
    folder.mkdir(parents=True, exist_ok=True)
    print(run(folder))
