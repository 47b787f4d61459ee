"""The finishing tail's features and slide page: from memory (now) against reading the folder back
(before), on one translated-size map.

Run: ``python -m pytest benchmarks/bench_finish_tail.py --benchmark-enable -s`` (or
``python benchmarks/bench_finish_tail.py``; the map size with
``VIRTIME_BENCH_FINISH_HW=4096,3072``).

A ``H x W`` canvas of the 23 channels (what a slide gives at the output mpp) is written band by
band with the observers a translation attaches (:class:`~virtime.features.bands.BandFeatures` and
the slide page's level taps), next to a tile table and the tissue mask. Then, interleaved:

* before (the baseline, as ``finish()`` did it): ``features_from_outputs(computed=...)``, which
  opens the map, verifies every chunk of every level and loads both masks, then
  ``write_slide_page`` from the folder (two pyramid levels, the tile table and the features table
  read back);
* after: ``features_from_bands`` and ``write_slide_page(data=...)`` from what the run holds.

Both write the same ``features.parquet`` and ``index.html`` (checked, byte for byte). The files
are in the page cache after the first repeat, so this is the CPU cost of the rereads, not disk
latency (on a cold network disk the baseline is slower still). Printed: medians and the ratio.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

CHUNK, WIN, MPP = 256, 256, 2.0


def _size() -> tuple[int, int]:
    h, w = os.environ.get("VIRTIME_BENCH_FINISH_HW", "4096,3072").split(",")
    return int(h), int(w)


def _build(root: Path) -> dict:
    """A finished map with its observers' results, tile table, tissue mask and an H&E."""
    import pandas as pd

    from virtime.features.bands import BandFeatures
    from virtime.io import NO_MODEL, write_parquet
    from virtime.simulate.slides import make_slide
    from virtime.stitch import omezarr
    from virtime.stitch.canvas import StreamingCanvas
    from virtime.stitch.observers import LevelTap
    from virtime.view.page import MifLevel, page_levels

    H, W = _size()
    out = root / "S1"
    out.mkdir()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:H, :W]
    tissue = ((yy - H / 2) ** 2 / (0.45 * H) ** 2 + (xx - W / 2) ** 2 / (0.45 * W) ** 2) < 1
    del yy, xx
    canvas = StreamingCanvas(out / "mif.ome.zarr", (H, W), factor=1, chunk=CHUNK, mpp=MPP,
                             extra_metadata={"model_hash": "bench"})
    names = [c.name for c in canvas.channels]
    shapes = omezarr.pyramid_shapes((H, W), canvas.n_levels)
    taps = {}
    for key, (level, channels) in page_levels(shapes).items():
        taps[key] = (LevelTap(level, shapes[level], [names.index(c) for c in channels]), channels)
        canvas.add_level_listener(taps[key][0])
    features = BandFeatures(MPP, names, lambda y0, y1: tissue[y0:y1])
    canvas.attach(features)
    coarse = rng.random((23, H // 32 + 1, W // 32 + 1), dtype=np.float32)
    for y in range(0, H, WIN):
        band = np.repeat(np.repeat(coarse[:, y // 32 : (y + WIN) // 32 + 1], 32, axis=1), 32,
                         axis=2)[:, : min(WIN, H - y), :W]
        for x in range(0, W, WIN):
            canvas.add(band[:, :, x : x + WIN], x, y)
        canvas.flush_until(min(H, y + WIN))
    canvas.close()
    np.save(out / "tissue_mask.npy", tissue)
    n = (H // 64) * (W // 64)
    tiles = pd.DataFrame({"tile": np.arange(n), "x": rng.integers(0, 4 * W, n),
                          "y": rng.integers(0, 4 * H, n), "tissue_fraction": rng.random(n)})
    for c in names:
        tiles[f"{c}.positive_fraction"] = rng.random(n).astype(np.float32)
        tiles[f"{c}.mean_probability"] = rng.random(n).astype(np.float32)
    write_parquet(tiles, out / "tiles.parquet", model_hash=NO_MODEL)
    slide_path = make_slide(root / "he.svs", 512, 512, mpp=0.5, seed=1)
    top_lv, grid_lv = (MifLevel(tap.image, channels) for tap, channels in
                       (taps["top"], taps["grid"]))
    he = np.full((max(1, 512 * shapes[-1][0] // max(shapes[-1])), 512, 3), 200, np.uint8)
    return {"out": out, "feats": features.result(), "tissue": tissue, "tiles": tiles,
            "slide_path": slide_path, "top": top_lv, "grid": grid_lv, "he": he,
            "shape": (H, W)}


def _result(seconds: float, out: Path) -> tuple[float, bytes, bytes]:
    return seconds, (out / "features.parquet").read_bytes(), (out / "index.html").read_bytes()


def _before(b: dict, slide) -> tuple[float, bytes, bytes]:
    from virtime.features.table import features_from_outputs
    from virtime.view.page import write_slide_page

    t0 = time.perf_counter()
    features_from_outputs(b["out"], failures=[], computed=b["feats"])
    write_slide_page(b["out"], slide=slide, he=b["he"])
    seconds = time.perf_counter() - t0
    return _result(seconds, b["out"])


def _after(b: dict, slide) -> tuple[float, bytes, bytes]:
    import pandas as pd

    from virtime.features.table import features_from_bands
    from virtime.view.page import PageData, write_slide_page

    t0 = time.perf_counter()
    row = features_from_bands(b["out"], b["feats"], shape_yx=b["shape"], tissue=b["tissue"],
                              failed=None, map_mpp=MPP, model_hash="bench", failures=[])
    page = PageData(b["top"], b["grid"], b["tiles"], pd.DataFrame([row]))
    write_slide_page(b["out"], slide=slide, he=b["he"], data=page)
    seconds = time.perf_counter() - t0
    return _result(seconds, b["out"])


def measure(repeats: int = 5) -> dict[str, float]:
    from virtime.slide import Slide

    with tempfile.TemporaryDirectory() as d:
        b = _build(Path(d))
        slide = Slide(b["slide_path"])
        runs: dict[str, list[float]] = {"before": [], "after": []}
        outputs = {}
        for _ in range(repeats):  # interleaved, so machine load falls on both alike
            for name, fn in (("before", _before), ("after", _after)):
                seconds, feats, page = fn(b, slide)
                runs[name].append(seconds)
                outputs[name] = (feats, page)
        assert outputs["before"][0] == outputs["after"][0], "features.parquet differs"
        assert outputs["before"][1] == outputs["after"][1], "index.html differs"
    res = {f"{k}_s": float(np.median(v)) for k, v in runs.items()}
    res["ratio"] = res["before_s"] / res["after_s"]
    return res


def _print(res: dict[str, float]) -> None:
    H, W = _size()
    print(f"\nfinishing tail (features + slide page), map {H}x{W}x23, chunk {CHUNK}: medians "
          f"of interleaved repeats")
    print(f"| before (reads the folder back) | {res['before_s']:.3f} s |")
    print(f"| after (from memory) | {res['after_s']:.3f} s |")
    print(f"before/after {res['ratio']:.2f}x")


def test_finish_tail(benchmark) -> None:
    res = benchmark.pedantic(measure, rounds=1, iterations=1)
    _print(res)


if __name__ == "__main__":
    _print(measure())
