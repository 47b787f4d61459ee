"""Several slides in one run: each slide's finishing writes beside the next slide's tile loop
(``translate_slides``) against the same run with the writes inline (the loop that
``virtime translate a b ...`` ran before: one engine, the next slide prefetched).

Run: ``python benchmarks/bench_translate_slides.py`` (or through pytest-benchmark:
``python -m pytest benchmarks/bench_translate_slides.py --benchmark-enable -s``). Four synthetic
4096 x 3072 slides at 0.5 µm/px, a tiny GigaTIME (the engine is cheap, as a GPU's would be next to
the CPU's work), ONNX Runtime, 512-px tiles. ``engine_s`` adds a simulated engine time per batch
(a sleep, the GIL free, as while a GPU computes). Both ways interleaved, medians; outputs are
checked equal (level 0 of every slide).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

N_SLIDES, W, H = 4, 4096, 3072


def _setup(d: Path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from tiny_models import save_tiny_gigatime

    import virtime
    from virtime.simulate.slides import make_slide
    from virtime.translation import TranslateConfig

    slides = [make_slide(d / f"s{i}.svs", W, H, mpp=0.5, seed=70 + i) for i in range(N_SLIDES)]
    model = virtime.load_model(save_tiny_gigatime(d / "tiny.safetensors", seed=0, bias=(0.0, 0.0)))
    config = TranslateConfig(tile_size=512, output_mpp=2.0, backend="onnxruntime",
                             show_progress=False, batch_size=4, window_batch=16, threads=2,
                             min_tissue=0.1, force=True)
    return slides, model, config


class _SlowEngine:
    """Wraps an engine: ``engine_s`` more per call (GIL released), as while a GPU computes."""

    def __init__(self, engine, engine_s: float) -> None:
        self._engine, self._s = engine, engine_s

    def run(self, x):
        time.sleep(self._s)
        return self._engine.run(x)

    def __getattr__(self, name):
        return getattr(self._engine, name)


def _inline(slides, model, out, config, engine) -> float:
    """One slide after another, its writes inline, the next slide prefetched."""
    from virtime.translation.prefetch import SlidePrefetcher
    from virtime.translation.run import translate_slide

    t0 = time.perf_counter()
    with SlidePrefetcher(slides, mpp=config.mpp) as ahead:
        for p in slides:
            translate_slide(p, model, out, config, engine=engine, prepared=ahead.take(p))
    return time.perf_counter() - t0


def _background(slides, model, out, config, engine) -> float:
    from virtime.translation import translate_slides

    t0 = time.perf_counter()
    for _, r in translate_slides(slides, model, out, config, engine=engine):
        assert not isinstance(r, Exception), r
    return time.perf_counter() - t0


def measure(repeats: int = 3, engine_s: float = 0.0) -> dict[str, float]:
    import zarr

    from virtime.translation import translation_engine

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        slides, model, config = _setup(d)
        base = translation_engine(model, config)
        engine = _SlowEngine(base, engine_s) if engine_s else base
        try:
            times: dict[str, list[float]] = {"inline": [], "background": []}
            for _ in range(repeats):  # interleaved: machine load falls on both alike
                times["inline"].append(_inline(slides, model, d / "a", config, engine))
                times["background"].append(_background(slides, model, d / "b", config, engine))
        finally:
            base.close()
        for p in slides:  # the same outputs
            a = np.asarray(zarr.open_group(str(d / "a" / p.stem / "mif.ome.zarr"))["0"][:])
            b = np.asarray(zarr.open_group(str(d / "b" / p.stem / "mif.ome.zarr"))["0"][:])
            assert np.array_equal(a, b)
    res = {k: float(np.median(v)) for k, v in times.items()}
    res["ratio"] = res["inline"] / res["background"]
    return res


def _print(res: dict[str, float], engine_s: float) -> None:
    print(f"\n{N_SLIDES} slides {W}x{H}, engine +{engine_s * 1e3:.0f} ms/batch: inline "
          f"{res['inline']:.2f} s, background {res['background']:.2f} s, "
          f"ratio {res['ratio']:.2f}x (medians)")


def test_translate_slides(benchmark) -> None:
    res = benchmark.pedantic(measure, rounds=1, iterations=1)
    _print(res, 0.0)


if __name__ == "__main__":
    for engine_s in (0.0, 0.2):
        _print(measure(engine_s=engine_s), engine_s)
