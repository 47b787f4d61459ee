"""The GPU check of issue #17: what virtime's translation does on one GPU, measured in one run.

Called by ``benchmarks/gpu/check.sh`` after it has built the CUDA extension and run
``pytest -m gpu``. It writes a synthetic 40x-like slide (a rendered H&E patch repeated, its tiles
compressed once and written as they are, so a 20k-window slide takes seconds), builds the models
with random weights at their official widths, and measures

(a) the official notebook loop: one 512-px tile at a time, its four 256-px windows, fp32 on the
    GPU, host round trip per tile (as ``scripts/gigatime_testing.ipynb``), on a subset of tiles;
(b) the bare engine on pre-staged device batches, for each precision and option (fp32, TF32,
    bf16, fp16, channels_last, CUDA graphs, torch.compile);
(c) the whole ``virtime translate`` of the slide (device path);

each as windows/s, GPU busy fraction (NVML utilization sampled at 20 Hz when ``pynvml`` imports,
else CUDA-event busy time over wall time) and peak GPU memory, printed as a table and written to
``--out`` (Markdown, with a JSON twin). ``--dry-run`` runs the same code end to end on CPU with tiny
models and a tiny slide, so the script works the first time it meets a GPU.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import sys
import tempfile
import threading
import time
import traceback
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: (name, precision, engine options) of the bare-engine variants, in table order.
VARIANTS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("fp32", "fp32", {"tf32": False, "channels_last": False}),
    ("tf32", "fp32", {"tf32": True, "channels_last": False}),
    ("bf16", "bf16", {"channels_last": False}),
    ("fp16", "fp16", {"channels_last": False}),
    ("bf16 + channels_last", "bf16", {"channels_last": True}),
    ("bf16 + channels_last + CUDA graphs", "bf16", {"channels_last": True, "cuda_graph": True}),
    ("bf16 + channels_last + torch.compile", "bf16", {"channels_last": True, "compile": True}),
)
#: Variants that need CUDA (skipped, and said so, in a CPU dry run).
_CUDA_ONLY = {"tf32", "fp16", "bf16 + channels_last + CUDA graphs",
              "bf16 + channels_last + torch.compile"}
#: What a CPU dry run measures of the rest (bf16 on CPU is slow; one bf16 variant runs its code).
_DRY = {"fp32", "bf16 + channels_last"}


@dataclass
class Row:
    part: str
    model: str
    variant: str
    windows_per_s: float | None = None
    gpu_busy: float | None = None
    peak_gib: float | None = None
    note: str = ""


# -- machine -------------------------------------------------------------------------------------
def machine(dev: str) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "date": _dt.date.today().isoformat(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": dev,
        "cpu_cores": os.cpu_count(),
    }
    if dev.startswith("cuda"):
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=p.name, sm=f"{p.major}.{p.minor}", gpu_mem_gib=round(p.total_memory / 2**30, 1),
                    multiprocessors=p.multi_processor_count)
    return info


class BusySampler:
    """GPU busy fraction over a block: NVML utilization at 20 Hz, or event time / wall time."""

    def __init__(self, dev: str) -> None:
        self.cuda = dev.startswith("cuda")
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.method = "none (CPU)"
        if self.cuda:
            try:
                import pynvml  # noqa: F401

                self.method = "nvml"
            except ImportError:
                self.method = "cuda events"

    def __enter__(self) -> BusySampler:  # noqa: PYI034
        if self.method == "nvml":
            import torch

            def loop() -> None:
                while not self._stop.wait(0.05):
                    self.samples.append(float(torch.cuda.utilization()))

            self._thread = threading.Thread(target=loop, daemon=True)
            self._thread.start()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.t0
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def fraction(self, event_busy_s: float | None = None) -> float | None:
        if self.method == "nvml" and self.samples:
            return float(np.mean(self.samples)) / 100.0
        if self.cuda and event_busy_s is not None and self.wall > 0:
            return min(1.0, event_busy_s / self.wall)
        return None


def _peak_reset(dev: str) -> None:
    if dev.startswith("cuda"):
        import torch

        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak_gib(dev: str) -> float | None:
    if not dev.startswith("cuda"):
        return None
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**30, 2)


def _sync(dev: str) -> None:
    if dev.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


# -- slide ---------------------------------------------------------------------------------------
def write_repeated_slide(path: Path, windows: int, *, window: int, tile: int, mpp: float,
                         seed: int = 0) -> tuple[Path, int]:
    """A pyramidal Aperio-style TIFF of at least ``windows`` model windows: one rendered H&E patch
    of ``tile`` pixels repeated, each TIFF tile compressed once and written as is. Returns the
    path and the number of model tiles it holds."""
    import tifffile

    from virtime.simulate.slides import synthetic_he

    per_tile = (tile // window) ** 2
    side = math.ceil(math.sqrt(math.ceil(windows / per_tile)))
    rgb, _ = synthetic_he(2 * tile, 2 * tile, mpp, rng=np.random.default_rng(seed))
    # The darkest (most tissue) tile-sized crop of the render is the repeated patch.
    crops = [(rgb[y : y + tile, x : x + tile].mean(), y, x)
             for y in range(0, tile + 1, tile // 4) for x in range(0, tile + 1, tile // 4)]
    _, y, x = min(crops)
    patch = np.ascontiguousarray(rgb[y : y + tile, x : x + tile])
    w0 = side * tile
    ttile = 512 if tile % 512 == 0 else tile  # TIFF tile (a divisor of the patch period)
    tmp = path.with_name(f".{path.name}.tmp")
    with tifffile.TiffWriter(tmp, bigtiff=True) as tif:
        level, factor, pat = 0, 1, patch
        while True:
            size = w0 // factor
            rep = ttile // pat.shape[0]
            block = np.tile(pat, (rep, rep, 1)) if rep >= 1 else pat[:ttile, :ttile]
            enc = zlib.compress(np.ascontiguousarray(block).tobytes(), 6)
            n = math.ceil(size / ttile) ** 2
            desc = (f"Aperio Image Library v12.0.0\n{w0}x{w0} [0,0 {w0}x{w0}] ({ttile}x{ttile}) "
                    f"virtime-check|AppMag = 40|MPP = {mpp:.4f}" if level == 0 else
                    f"Aperio Image Library v12.0.0\n{w0}x{w0} -> {size}x{size}")
            tif.write((enc for _ in range(n)), shape=(size, size, 3), dtype=np.uint8,
                      tile=(ttile, ttile), compression="zlib", photometric="rgb", metadata=None,
                      subfiletype=0 if level == 0 else 1, description=desc)
            if size // 4 < 256 or pat.shape[0] < 4:
                break
            pat = pat.reshape(pat.shape[0] // 4, 4, pat.shape[1] // 4, 4, 3).mean(
                axis=(1, 3)).round().astype(np.uint8)
            level, factor = level + 1, factor * 4
    os.replace(tmp, path)
    return path, side * side


# -- models --------------------------------------------------------------------------------------
def flash_available() -> bool:
    """Whether ``virtime.models.flash`` exposes the official GigaTIME-Flash architecture."""
    try:
        from virtime.models import flash
    except ImportError:
        return False
    return hasattr(flash, "GigaTIMEFlash")


def build_model(name: str, dry: bool, window: int, folder: Path, mpp: float) -> Any:
    """A random-weight model with a card (saved and loaded as a user's checkpoint would be)."""
    import torch

    from virtime.models import GigaTIME, load, save

    torch.manual_seed(0)
    if name == "gigatime":
        model = GigaTIME(filters=[4, 8, 16, 32, 64]) if dry else GigaTIME()
    elif name == "flash":
        from virtime.models.flash import GigaTIMEFlash

        model = (GigaTIMEFlash(window=window, dim=64, depth=4, heads=1, mlp_hidden=64,
                               take=(0, 1, 2, 3), decoder=(32, 16, 8, 8), output_size=window)
                 if dry else GigaTIMEFlash())
    else:
        raise SystemExit(f"unknown model {name!r}; choose gigatime or flash")
    path = folder / f"{name}.safetensors"
    save(model.eval(), path, input_mpp=mpp, window=window)
    return load(path)


# -- (a) the official loop -----------------------------------------------------------------------
def official_loop(model: Any, patch_tiles: np.ndarray, dev: str, tiles: int) -> Row:
    """One tile at a time: normalize on the host, copy up, four windows, sigmoid, copy down."""
    import torch

    net = model.to(dev).eval()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    t = patch_tiles.shape[1]
    w = int(model.card.window)
    _peak_reset(dev)
    with torch.no_grad():
        for i in range(2):  # warm-up
            _official_tile(net, patch_tiles[i % len(patch_tiles)], mean, std, dev, t, w)
        _sync(dev)
        with BusySampler(dev) as s:
            for i in range(tiles):
                _official_tile(net, patch_tiles[i % len(patch_tiles)], mean, std, dev, t, w)
            _sync(dev)
    k = (t // w) ** 2
    return Row("a official loop", model.card.architecture, "fp32, 1 tile per call",
               round(tiles * k / s.wall, 1), s.fraction(), _peak_gib(dev), f"{tiles} tiles")


def _official_tile(net: Any, tile: np.ndarray, mean: Any, std: Any, dev: str, t: int, w: int) -> Any:
    import torch

    x = (torch.from_numpy(tile).permute(2, 0, 1).float() / 255.0 - mean) / std
    x = x.to(dev)
    wins = torch.stack([x[:, y : y + w, xx : xx + w] for y in range(0, t, w) for xx in range(0, t, w)])
    return torch.sigmoid(net(wins)).cpu().numpy()


# -- (b) the bare engine -------------------------------------------------------------------------
def bare_engine(model: Any, dev: str, batch: int, seconds: float, variants: list[str]) -> list[Row]:
    import torch

    from virtime.engines import create_engine

    rows = []
    w = int(model.card.window)
    for name, precision, opts in VARIANTS:
        if name not in variants:
            continue
        arch = model.card.architecture
        if not dev.startswith("cuda") and name in _CUDA_ONLY:
            rows.append(Row("b bare engine", arch, name, note="skipped: needs CUDA (dry run)"))
            continue
        if not dev.startswith("cuda") and name not in _DRY:
            rows.append(Row("b bare engine", arch, name, note="skipped in the CPU dry run"))
            continue
        try:
            _peak_reset(dev)
            eng = create_engine(model, backend="torch", precision=precision, device=dev,
                                max_batch=batch, window=w, **opts)
            x = torch.randn((batch, 3, w, w), device=dev)  # pre-staged on the device
            t0 = time.perf_counter()
            for _ in range(3):
                eng.run_tensor(x)
            _sync(dev)
            warm = time.perf_counter() - t0
            iters, busy = 0, 0.0
            with BusySampler(dev) as s:
                start = time.perf_counter()
                while True:
                    if dev.startswith("cuda"):
                        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                        a.record()
                        eng.run_tensor(x)
                        b.record()
                        b.synchronize()
                        busy += a.elapsed_time(b) / 1e3
                    else:
                        eng.run_tensor(x)
                    iters += 1
                    if time.perf_counter() - start >= seconds and iters >= 2:
                        break
                _sync(dev)
            rows.append(Row("b bare engine", arch, name, round(iters * batch / s.wall, 1),
                            s.fraction(busy), _peak_gib(dev),
                            f"batch {batch}, {iters} calls, warm-up {warm:.1f} s"))
            eng.close()
        except Exception as exc:  # noqa: BLE001 - one failing variant must not hide the rest
            rows.append(Row("b bare engine", arch, name, note=f"error: {type(exc).__name__}: "
                                                               f"{str(exc).splitlines()[0][:120]}"))
            traceback.print_exc()
    return rows


# -- (c) the whole translate ---------------------------------------------------------------------
def whole_translate(model: Any, slide: Path, out: Path, dev: str, precision: str, batch: int,
                    opts: dict[str, Any], tile: int, dry: bool, features: bool = False) -> Row:
    """``features``: also the slide features, the thumbnail and the pyramid from the canvas bands
    on the observer thread (the default job): shows whether they keep up with the GPU."""
    import virtime
    from virtime.translation import TranslateConfig

    cfg = TranslateConfig(backend="torch", precision=precision, device=dev, tile_size=tile,
                          batch_size=max(1, batch // 4), window_batch=batch, features=features,
                          show_progress=False, force=True, engine_options=opts,
                          device_path=True if dry else None)
    _peak_reset(dev)
    with BusySampler(dev) as s:
        res = virtime.translate(slide, model, out, cfg)
        _sync(dev)
    k = (tile // int(model.card.window)) ** 2
    timings = res.record["timings_seconds"]
    loop = timings.get("tile_loop_wall", res.seconds)
    tl = res.record.get("timeline", {})
    compute = tl.get("stages", {}).get("compute", {}).get("busy_s")
    name = f"{precision}" + "".join(f" + {k_}" for k_, v in opts.items() if v)
    name += " + features" if features else ""
    return Row("c virtime translate", model.card.architecture, name,
               round(res.tiles_done * k / max(loop, 1e-9), 1), s.fraction(compute), _peak_gib(dev),
               f"{res.tiles_done} tiles, loop {loop:.1f} s of {res.seconds:.1f} s, bound by "
               f"{tl.get('bound_by')}, overlap {tl.get('overlap_s')} s, threads: band writer "
               f"{timings.get('band_writer_thread', 0):.1f} s, observers "
               f"{timings.get('observer_thread', 0):.1f} s")


# -- table ---------------------------------------------------------------------------------------
def table(rows: list[Row], info: dict[str, Any]) -> str:
    head = ", ".join(f"{k} {v}" for k, v in info.items())
    lines = [f"GPU check ({head})", "",
             "| part | model | variant | windows/s | GPU busy | peak GPU GiB | note |",
             "| --- | --- | --- | ---: | ---: | ---: | --- |"]
    for r in rows:
        f = (lambda v, fmt: "-" if v is None else format(v, fmt))
        lines.append(f"| {r.part} | {r.model} | {r.variant} | {f(r.windows_per_s, ',.1f')} | "
                     f"{f(r.gpu_busy, '.0%')} | {f(r.peak_gib, '.2f')} | {r.note} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="tiny models and slide, on CPU")
    ap.add_argument("--out", default=None, help="write the table here (Markdown; JSON beside it)")
    ap.add_argument("--models", default="gigatime,flash",
                    help="comma-separated: gigatime, flash (flash only where the module has it)")
    ap.add_argument("--windows", type=int, default=None, help="windows in the slide (20480)")
    ap.add_argument("--batch", type=int, default=None, help="windows per engine call (256)")
    ap.add_argument("--seconds", type=float, default=None, help="per bare-engine variant (6)")
    ap.add_argument("--official-tiles", type=int, default=None, help="tiles in (a) (150)")
    ap.add_argument("--variants", default=",".join(v[0] for v in VARIANTS),
                    help="bare-engine variants to run")
    ap.add_argument("--translate-options", default="channels_last",
                    help="engine options of (c), comma-separated flags (channels_last,cuda_graph)")
    ap.add_argument("--precision", default="bf16", help="precision of (c)")
    ap.add_argument("--workdir", default=None, help="slide and outputs (default: a temp folder)")
    ap.add_argument("--skip", default="", help="parts to skip: a,b,c")
    args = ap.parse_args(argv)

    import torch

    dry = args.dry_run
    if not dry and not torch.cuda.is_available():
        print("check.py: no CUDA GPU here; use --dry-run for the CPU rehearsal", file=sys.stderr)
        return 2
    dev = "cpu" if dry else "cuda"
    if dry:
        torch.set_num_threads(1)  # shared CI cores: one thread is the fastest there
    window, tile, mpp = (64, 128, 0.5) if dry else (256, 512, 0.25)
    windows = args.windows or (32 if dry else 20480)
    batch = args.batch or (8 if dry else 256)
    seconds = args.seconds if args.seconds is not None else (0.2 if dry else 6.0)
    official_tiles = args.official_tiles or (2 if dry else 150)
    skip = set(filter(None, args.skip.split(",")))
    variants = [v.strip() for v in args.variants.split(",")]
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if "flash" in models and not flash_available():
        print("check.py: virtime.models.flash has no GigaTIMEFlash; flash left out", file=sys.stderr)
        models.remove("flash")
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="virtime-check-"))
    work.mkdir(parents=True, exist_ok=True)
    info = machine(dev)
    print(json.dumps(info), flush=True)
    t0 = time.perf_counter()
    slide, n_tiles = write_repeated_slide(work / "check.svs", windows, window=window, tile=tile,
                                          mpp=mpp)
    info["slide"] = (f"{n_tiles} tiles of {tile} px = {n_tiles * (tile // window) ** 2} windows, "
                     f"{os.path.getsize(slide) / 2**30:.2f} GiB, written in "
                     f"{time.perf_counter() - t0:.1f} s")
    print(info["slide"], flush=True)
    import openslide

    with openslide.OpenSlide(str(slide)) as osr:
        patch = np.asarray(osr.read_region((0, 0), 0, (tile, tile)).convert("RGB"))
    rows: list[Row] = []
    opts = {o.strip(): True for o in args.translate_options.split(",") if o.strip()}
    if dry:
        opts = {k: v for k, v in opts.items() if k != "cuda_graph"}
    for name in models:
        t1 = time.perf_counter()
        try:
            model = build_model(name, dry, window, work, mpp)
        except Exception as exc:  # noqa: BLE001 - reported in the table, the other models go on
            rows.append(Row("-", name, "-", note=f"error building: {type(exc).__name__}: {exc}"[:160]))
            traceback.print_exc()
            continue
        if "a" not in skip and name == "gigatime":
            rows.append(official_loop(model, patch[None], dev, official_tiles))
            print(table(rows[-1:], {}).splitlines()[-1], flush=True)
        if "b" not in skip:
            for r in bare_engine(model, dev, batch, seconds, variants):
                rows.append(r)
                print(table([r], {}).splitlines()[-1], flush=True)
        if "c" not in skip:
            for features in (False, True):
                try:
                    rows.append(whole_translate(model, slide, work / f"out-{name}", dev,
                                                args.precision if not dry else "fp32", batch,
                                                opts, tile, dry, features=features))
                except Exception as exc:  # noqa: BLE001 - reported in the table
                    rows.append(Row("c virtime translate", name, args.precision,
                                    note=f"error: {type(exc).__name__}: {exc}"[:160]))
                    traceback.print_exc()
            print(table(rows[-1:], {}).splitlines()[-1], flush=True)
        print(f"{name}: {time.perf_counter() - t1:.1f} s", flush=True)
    text = table(rows, info)
    print(text)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        out.with_suffix(out.suffix + ".json").write_text(
            json.dumps({"machine": info, "rows": [asdict(r) for r in rows]}, indent=1))
    bad = [r for r in rows if r.note.startswith("error")]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
