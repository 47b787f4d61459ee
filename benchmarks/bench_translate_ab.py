"""Whole-slide translation, this checkout against another one (a baseline commit), in one run.

Why: a refactor of the pipeline must not make translation slower, and the finishing writes
after the tile loop should get shorter. Both checkouts translate the same synthetic slides in
fresh processes, alternately (A B A B ...), so machine load falls on both alike; the ratios are
taken pair by pair and their medians reported.

Run::

    git worktree add /tmp/base <commit>           # the baseline's Python tree
    cp <its built virtime/_core*.so> /tmp/base/python/virtime/
    python benchmarks/bench_translate_ab.py --baseline /tmp/base/python [--rounds 3]

Per run it reports the whole ``translate`` call, the tile loop (``tile_loop_wall`` of the run
record) and everything outside the loop (set-up + finishing writes: slide page, thumbnail,
features, tables, pyramid tail). The slide is a ``virtime.simulate`` H&E (no real slide is
available offline) of 4096 x 3072 px at 0.5 µm/px, and the translator a reduced-width GigaTIME
(so the pipeline's own work, not the model, dominates, as next to a GPU); ONNX Runtime, 2 threads.
The outputs of both checkouts are checked equal (level 0 of the virtual mIF).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: Runs inside the measured process; only the public API both checkouts share.
DRIVER = r"""
import json, sys, time
from pathlib import Path
import virtime
from virtime.translation import TranslateConfig
slide, weights, out = sys.argv[1:4]
config = TranslateConfig(tile_size=512, output_mpp=2.0, backend="onnxruntime", show_progress=False,
                         batch_size=4, window_batch=16, threads=2, min_tissue=0.1, force=True,
                         cache_dir=str(Path(out).parent / "cache"))
model = virtime.load_model(weights)
t0 = time.perf_counter()
result = virtime.translate(slide, model, out, config)
total = time.perf_counter() - t0
loop = result.record["timings_seconds"]["tile_loop_wall"]
print(json.dumps({"total": total, "loop": loop, "outside_loop": total - loop,
                  "folder": str(result.output_dir), "virtime": virtime.__file__}))
"""

#: Makes a process import the checkout at ``VIRTIME_AB_TREE`` instead of the editable install.
SITE = r"""
import os, sys
tree = os.environ.get("VIRTIME_AB_TREE")
if tree:
    sys.meta_path[:] = [f for f in sys.meta_path if "Redirecting" not in type(f).__name__]
    sys.path.insert(0, tree)
"""


def _run(tree: str | None, slide: Path, weights: Path, out: Path, site: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(site))
    if tree:
        env["VIRTIME_AB_TREE"] = tree
    else:
        env.pop("VIRTIME_AB_TREE", None)
    proc = subprocess.run([sys.executable, "-c", DRIVER, str(slide), str(weights), str(out)],
                          env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"translate failed in {tree or 'this checkout'}:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _same_level0(a: str, b: str) -> bool:
    import numpy as np
    import zarr

    za = zarr.open_group(str(Path(a) / "mif.ome.zarr"), mode="r")["0"]
    zb = zarr.open_group(str(Path(b) / "mif.ome.zarr"), mode="r")["0"]
    return bool(np.array_equal(np.asarray(za[:]), np.asarray(zb[:])))


def measure(baseline: str, rounds: int = 3) -> dict[str, dict[str, float]]:
    """Median seconds of each figure for the baseline (A) and this checkout (B), and the median
    of the pair-by-pair ratios A/B (above 1: this checkout is faster)."""
    sys.path.insert(0, str(HERE.parent / "tests"))
    from tiny_models import save_tiny_gigatime

    from virtime.simulate.slides import make_slide

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "site").mkdir()
        (d / "site" / "sitecustomize.py").write_text(SITE)
        slide = make_slide(d / "slide.svs", 4096, 3072, mpp=0.5, seed=70)
        weights = save_tiny_gigatime(d / "tiny.safetensors", seed=0, bias=(0.0, 0.0))
        runs: dict[str, list[dict]] = {"A": [], "B": []}
        _run(baseline, slide, weights, d / "warm" / "A", d / "site")  # warm-up: exports, caches
        _run(None, slide, weights, d / "warm" / "B", d / "site")
        for k in range(rounds):
            runs["A"].append(_run(baseline, slide, weights, d / f"A{k}", d / "site"))
            runs["B"].append(_run(None, slide, weights, d / f"B{k}", d / "site"))
        assert runs["A"][0]["virtime"] != runs["B"][0]["virtime"], "both runs used one checkout"
        assert _same_level0(runs["A"][0]["folder"], runs["B"][0]["folder"]), "outputs differ"
    res: dict[str, dict[str, float]] = {}
    for figure in ("total", "loop", "outside_loop"):
        a = [r[figure] for r in runs["A"]]
        b = [r[figure] for r in runs["B"]]
        ratios = [x / y for x, y in zip(a, b)]
        res[figure] = {"baseline_s": statistics.median(a), "this_s": statistics.median(b),
                       "ratio": statistics.median(ratios), "ratio_min": min(ratios),
                       "ratio_max": max(ratios)}
    return res


def _print(res: dict[str, dict[str, float]]) -> None:
    print("figure        baseline s   this s   baseline/this: median of pairs (min-max)")
    for figure, r in res.items():
        print(f"{figure:<13} {r['baseline_s']:10.2f} {r['this_s']:8.2f}   {r['ratio']:.2f}x "
              f"({r['ratio_min']:.2f}-{r['ratio_max']:.2f})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, help="the baseline checkout's python/ folder")
    parser.add_argument("--rounds", type=int, default=3, help="measured runs of each checkout")
    args = parser.parse_args()
    _print(measure(args.baseline, args.rounds))
