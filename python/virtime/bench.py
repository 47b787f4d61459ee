"""``virtime bench``: end-to-end translation throughput beside the official notebook's loop.

Both run on the same synthetic slide in the same process. The reference loop is what the
official GigaTIME notebook does per tile: read one tile (openslide-python), ImageNet-normalize it
in numpy, run its four 256-px windows one at a time at batch 1 in fp32 with torch, sigmoid, and
stitch by averaging 8x8 pixel blocks into a numpy canvas. The pipeline is ``virtime.translate``
(C++ batcher, the chosen engine, streaming canvas). A third number, the engine alone on
pre-packed batches, says whether the pipeline around the engine is the bottleneck.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from virtime.models.card import IMAGENET_MEAN, IMAGENET_STD  # the one definition of the constants

__all__ = ["BenchResult", "CompareResult", "compare_bench", "reference_loop", "run_bench"]

MEAN = np.array(IMAGENET_MEAN, np.float32)
STD = np.array(IMAGENET_STD, np.float32)


@dataclass
class BenchResult:
    """Throughputs measured in one run (tiles per second) and the pipeline's stage times."""

    tiles: int
    pipeline_tiles_per_s: float
    reference_tiles_per_s: float
    engine_tiles_per_s: float
    stage_seconds: dict[str, float] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def speedup_over_reference(self) -> float:
        return self.pipeline_tiles_per_s / self.reference_tiles_per_s

    @property
    def pipeline_over_engine(self) -> float:
        return self.pipeline_tiles_per_s / self.engine_tiles_per_s

    @property
    def tile_loop_tiles_per_s(self) -> float:
        """Steady-state rate: the tile loop alone, without per-slide setup and final writes."""
        return self.tiles / max(self.stage_seconds.get("tile_loop_wall", float("nan")), 1e-9)

    @property
    def tile_loop_over_engine(self) -> float:
        return self.tile_loop_tiles_per_s / self.engine_tiles_per_s

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["speedup_over_reference"] = self.speedup_over_reference
        d["pipeline_over_engine"] = self.pipeline_over_engine
        d["tile_loop_tiles_per_s"] = self.tile_loop_tiles_per_s
        d["tile_loop_over_engine"] = self.tile_loop_over_engine
        return d


def reference_loop(slide_path: Path, model: Any, xy: np.ndarray, tile: int, window: int,
                   factor: int, shape_yx: tuple[int, int]) -> np.ndarray:
    """The official notebook's per-tile loop (see module docstring); returns the 8x canvas."""
    import openslide
    import torch

    canvas = np.zeros((23, *shape_yx), np.float32)
    with openslide.OpenSlide(str(slide_path)) as osr, torch.inference_mode():
        for x, y in xy:
            rgb = np.asarray(osr.read_region((int(x), int(y)), 0, (tile, tile)))[..., :3]
            norm = ((rgb.astype(np.float32) / 255 - MEAN) / STD).transpose(2, 0, 1)
            for wy in range(0, tile, window):
                for wx in range(0, tile, window):
                    inp = torch.from_numpy(np.ascontiguousarray(norm[None, :, wy:wy + window,
                                                                     wx:wx + window]))
                    prob = torch.sigmoid(model(inp))[0].numpy()
                    c, h, w = prob.shape
                    blocks = prob.reshape(c, h // factor, factor, w // factor, factor).mean((2, 4))
                    oy, ox = (int(y) + wy) // factor, (int(x) + wx) // factor
                    canvas[:, oy:oy + h // factor, ox:ox + w // factor] = blocks
    return canvas


def run_bench(model: Any, *, size: int = 4096, config: Any = None, reference_tiles: int = 8,
              workdir: str | None = None, seed: int = 0,
              slide: str | Path | None = None) -> BenchResult:
    """Times the pipeline, the engine alone and the reference loop on one synthetic slide.

    The slide is ``size`` x ``size`` pixels at the model's input mpp, all tissue-covered tiles
    translated; the reference loop runs on the first ``reference_tiles`` of the same tiles (it is
    slow) and its per-tile rate is compared. ``slide`` reuses a slide made before (at the
    model's mpp) instead of making one.
    """
    from virtime.engines import create_engine
    from virtime.simulate.slides import make_slide
    from virtime.translation import TranslateConfig, translate

    cfg = config or TranslateConfig(show_progress=False)
    cfg = dataclasses.replace(cfg, force=True, features=False, overlap=0)
    mpp = float(model.card.input_mpp)
    window = int(model.card.window)
    folder = Path(workdir or tempfile.mkdtemp(prefix="virtime-bench-"))
    slide_path = (Path(slide) if slide is not None
                  else make_slide(folder / "bench.svs", size, size, mpp=mpp, seed=seed))
    engine = create_engine(model, backend=cfg.backend, precision=cfg.precision, device=cfg.device,
                           max_batch=cfg.window_batch, window=window)
    try:
        # Warm the engine (first calls allocate and compile), then time the pipeline.
        engine.run(np.zeros((cfg.window_batch, 3, window, window), np.float32))
        t0 = time.perf_counter()
        result = translate(slide_path, model, folder / "out", cfg, engine=engine)
        pipeline_s = time.perf_counter() - t0
        n = max(result.tiles_done, 1)
        per_tile = (cfg.tile_size // window) ** 2
        packed = np.random.default_rng(seed).standard_normal(
            (cfg.window_batch, 3, window, window)).astype(np.float32)
        calls = max(1, min(n * per_tile // cfg.window_batch, 64))
        t0 = time.perf_counter()
        for _ in range(calls):
            engine.run(packed)
        engine_tiles_per_s = calls * cfg.window_batch / per_tile / (time.perf_counter() - t0)
    finally:
        engine.close()
    from virtime.slide import Slide
    from virtime.tiling import TilingConfig, make_tile_grid
    from virtime.tissue import detect_tissue

    slide = Slide(slide_path)
    grid = make_tile_grid(slide, TilingConfig(target_mpp=mpp, tile_size=cfg.tile_size,
                                              min_tissue=cfg.min_tissue), detect_tissue(slide))
    factor = round(cfg.output_mpp / mpp)
    xy = grid.xy[:reference_tiles]
    t0 = time.perf_counter()
    reference_loop(slide_path, model, xy, cfg.tile_size, window, factor,
                   (size // factor + 1, size // factor + 1))
    reference_s = time.perf_counter() - t0
    return BenchResult(
        tiles=n,
        pipeline_tiles_per_s=n / pipeline_s,
        reference_tiles_per_s=len(xy) / reference_s,
        engine_tiles_per_s=engine_tiles_per_s,
        stage_seconds=dict(result.record["timings_seconds"]),
        settings={"backend": result.record["backend"], "precision": result.record["precision"],
                  "device": result.record["device"], "slide_px": size, "mpp": mpp,
                  "tile_size": cfg.tile_size, "window": window,
                  "window_batch": cfg.window_batch, "reference_tiles": len(xy)},
    )


@dataclass
class CompareResult:
    """Several translators benchmarked on one slide and engine, runs interleaved (A B, B A ...)."""

    runs: dict[str, list[BenchResult]]

    @property
    def names(self) -> list[str]:
        return list(self.runs)

    @property
    def summary(self) -> Any:
        """Medians per model (engine windows/s, pipeline and tile-loop tiles/s) and their ratio
        to the first model's, one row per model."""
        import pandas as pd

        rows = []
        for name, runs in self.runs.items():
            per_tile = (runs[0].settings["tile_size"] // runs[0].settings["window"]) ** 2
            rows.append({
                "model": name,
                "runs": len(runs),
                "engine_windows_per_s": float(np.median([r.engine_tiles_per_s * per_tile
                                                         for r in runs])),
                "pipeline_tiles_per_s": float(np.median([r.pipeline_tiles_per_s for r in runs])),
                "tile_loop_tiles_per_s": float(np.median([r.tile_loop_tiles_per_s
                                                          for r in runs])),
                "reference_tiles_per_s": float(np.median([r.reference_tiles_per_s
                                                          for r in runs])),
            })
        df = pd.DataFrame(rows).set_index("model")
        for col in ("engine_windows_per_s", "pipeline_tiles_per_s", "tile_loop_tiles_per_s"):
            df[col.replace("_per_s", "_ratio")] = df[col] / df[col].iloc[0]
        return df

    def as_dict(self) -> dict[str, Any]:
        return {"summary": self.summary.reset_index().to_dict(orient="records"),
                "runs": {k: [r.as_dict() for r in v] for k, v in self.runs.items()}}


def compare_bench(models: dict[str, Any], *, size: int = 4096, config: Any = None,
                  repeats: int = 3, reference_tiles: int = 2, workdir: str | None = None,
                  seed: int = 0) -> CompareResult:
    """:func:`run_bench` for each model on the same synthetic slide, engine and settings.

    Runs are interleaved with the order reversed every round (A B, B A, A B ...) so that a change
    of machine load falls on every model alike; :attr:`CompareResult.summary` gives medians and
    ratios to the first model. The models must share input mpp and window (one slide for all).
    """
    from virtime.errors import InvalidArgumentError
    from virtime.simulate.slides import make_slide

    if not models or repeats < 1:
        raise InvalidArgumentError("compare_bench needs at least one model and one repeat")
    geometry = {(float(m.card.input_mpp), int(m.card.window)) for m in models.values()}
    if len(geometry) != 1:
        raise InvalidArgumentError(
            f"models differ in input mpp / window {sorted(geometry)}: no common slide to compare on")
    mpp = geometry.pop()[0]
    folder = Path(workdir or tempfile.mkdtemp(prefix="virtime-bench-"))
    slide = make_slide(folder / "bench.svs", size, size, mpp=mpp, seed=seed)
    names = list(models)
    runs: dict[str, list[BenchResult]] = {n: [] for n in names}
    for r in range(repeats):
        for name in (names if r % 2 == 0 else names[::-1]):
            runs[name].append(run_bench(models[name], size=size, config=config,
                                        reference_tiles=reference_tiles, seed=seed,
                                        workdir=str(folder / f"{name}-{r}"), slide=slide))
    return CompareResult(runs=runs)
