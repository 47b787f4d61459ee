"""``virtime view`` on a large synthetic output: time to open, first paint, tiles/s, pan steps.

Run: ``python -m pytest benchmarks/bench_view.py --benchmark-enable -s`` (size with
``VIRTIME_BENCH_VIEW_SIZE=WxH``, default 100000x80000 level-0 pixels at 0.25 µm/px).

The output is synthetic but laid out exactly as ``virtime translate`` writes it, built fast:
the slide is an Aperio-style pyramidal TIFF whose tiles are one pre-compressed 512 x 512 H&E patch
repeated (tifffile writes the bytes as they are), the OME-Zarr pyramid (23 channels at 2 µm/px)
has one chunk file per level hard-linked to every chunk key, the tissue mask is a memory-mapped
``.npy`` and the tile table has one row per 512-px tile. Every read still decodes real
compressed data. Baseline: the same H&E tile rendered the naive way (level-0 region through
openslide-python, then resized), compared in the same run; the two images must agree.
"""

from __future__ import annotations

import concurrent.futures as cf
import importlib.util
import itertools
import json
import os
import shutil
import sys
import time
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from virtime.channels import CHANNELS, CHANNEL_NAMES

MPP = 0.25
OUT_MPP = 2.0
TILE = 512
CHUNK = 256


def _size() -> tuple[int, int]:
    w, h = os.environ.get("VIRTIME_BENCH_VIEW_SIZE", "100000x80000").lower().split("x")
    return int(w), int(h)


def _patch() -> np.ndarray:
    from PIL import Image, ImageFilter

    from virtime.simulate.slides import synthetic_he

    rgb, _ = synthetic_he(TILE, TILE, MPP, rng=np.random.default_rng(0))
    smooth = np.asarray(Image.fromarray(rgb).filter(ImageFilter.GaussianBlur(3)))
    return (smooth // 24 * 24 + 12).astype(np.uint8)  # compresses ~20x, like mostly-flat tissue


def _write_slide(path: Path, w0: int, h0: int, patch: np.ndarray) -> None:
    import tifffile

    raw = zlib.compress(np.ascontiguousarray(patch).tobytes(), 6)
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        w, h, k = w0, h0, 0
        while True:
            n = -(-w // TILE) * -(-h // TILE)
            desc = (f"Aperio Image Library v12.0.0\n{w0}x{h0} [0,0 {w0}x{h0}] ({TILE}x{TILE}) "
                    f"bench|AppMag = 40|MPP = {MPP}" if k == 0 else
                    f"Aperio Image Library v12.0.0\n{w0}x{h0} -> {w}x{h}")
            tif.write(itertools.repeat(raw, n), shape=(h, w, 3), dtype=np.uint8,
                      tile=(TILE, TILE), compression="zlib", photometric="rgb", metadata=None,
                      description=desc, subfiletype=0 if k == 0 else 1)
            if max(w, h) // 4 < 512:
                break
            w, h, k = -(-w // 4), -(-h // 4), k + 1


def _write_zarr(path: Path, shape: tuple[int, int]) -> None:
    from virtime.stitch import omezarr

    group = omezarr.create_pyramid(path, len(CHANNELS), shape, CHUNK)
    n_levels = omezarr.n_pyramid_levels(shape, CHUNK)
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:CHUNK, :CHUNK]
    for k in range(n_levels):
        arr = group[str(k)]
        _, h, w = arr.shape
        blob = (np.sin(xx / (9 + k)) * np.cos(yy / (7 + k)) > 0.3) * rng.integers(100, 255)
        for c in range(len(CHANNELS)):  # one real chunk per channel, hard-linked everywhere
            arr[c, :min(CHUNK, h), :min(CHUNK, w)] = (np.roll(blob, 17 * c, axis=1)
                                                       [:min(CHUNK, h), :min(CHUNK, w)])
            src = path / str(k) / str(c) / "0" / "0"
            for i in range(-(-h // CHUNK)):
                row = path / str(k) / str(c) / str(i)
                row.mkdir(parents=True, exist_ok=True)
                for j in range(-(-w // CHUNK)):
                    if i or j:
                        os.link(src, row / str(j))
    omezarr.write_ngff_metadata(group, n_levels=n_levels, channels=CHANNELS, mpp=OUT_MPP,
                                name="bench", extra={"factor": 4})


def build_output(root: Path) -> Path:
    """OUT/BENCH as virtime translate lays it out, for a slide of _size()."""
    w0, h0 = _size()
    out = root / "out" / "BENCH"
    out.mkdir(parents=True)
    slide = root / "BENCH.svs"
    _write_slide(slide, w0, h0, _patch())
    f = OUT_MPP / MPP
    canvas = (-(-h0 // int(f)), -(-w0 // int(f)))
    _write_zarr(out / "mif.ome.zarr", canvas)
    mask = np.lib.format.open_memmap(out / "tissue_mask.npy", mode="w+", dtype=bool, shape=canvas)
    mask[canvas[0] // 10: -canvas[0] // 10, canvas[1] // 10: -canvas[1] // 10] = True
    mask.flush()
    del mask
    step = TILE * 2  # 512 model px at 0.5 µm/px = 1024 level-0 px
    xy = [(x, y) for y in range(0, h0, step) for x in range(0, w0, step)]
    rng = np.random.default_rng(2)
    table = {"tile": np.arange(len(xy)), "x": [p[0] for p in xy], "y": [p[1] for p in xy],
             "tissue_fraction": rng.random(len(xy))}
    for n in CHANNEL_NAMES:
        table[f"{n}.positive_fraction"] = rng.random(len(xy))
        table[f"{n}.mean_probability"] = rng.random(len(xy))
    pd.DataFrame(table).to_parquet(out / "tiles.parquet")
    (out / "summary.json").write_text(json.dumps({
        "status": "done", "slide": str(slide), "slide_id": "BENCH", "slide_mpp": MPP,
        "output_mpp": OUT_MPP, "config": {"tile_size": 512, "thumbnail_channels":
                                          ["DAPI", "CD8", "CK"]}}))
    return out


@pytest.fixture(scope="module")
def output(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench_view")
    t0 = time.perf_counter()
    out = build_output(root)
    print(f"\nsynthetic output {_size()} built in {time.perf_counter() - t0:.1f} s")
    yield out
    shutil.rmtree(root, ignore_errors=True)


def _support():
    name = "virtime_view_test_support"
    if name not in sys.modules:
        path = Path(__file__).parents[1] / "tests" / "view" / "_support.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def _fetch(url: str) -> int:
    with urllib.request.urlopen(url, timeout=60) as r:
        return len(r.read())


def _rate(urls: list[str], threads: int = 4) -> float:
    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(threads) as pool:
        list(pool.map(_fetch, urls))
    return len(urls) / (time.perf_counter() - t0)


def test_view_open_paint_and_tiles(output, benchmark):
    import openslide
    from PIL import Image

    from virtime.view import ViewServer, ViewSource

    t0 = time.perf_counter()
    source = ViewSource(output)
    server = ViewServer(source).start()
    _fetch(server.url + "info.json")
    t_open = time.perf_counter() - t0
    rows = {"open (ViewSource + server + info.json), s": t_open}
    z = source.max_zoom
    try:
        rng = np.random.default_rng(3)
        nx, ny = -(-source.width // 256), -(-source.height // 256)
        pick = [(int(rng.integers(nx)), int(rng.integers(ny))) for _ in range(120)]
        he = [server.url + f"he/{z}/{x}_{y}.jpg" for x, y in pick]
        mif = [server.url + f"mif/14/{z}/{x}_{y}.png" for x, y in pick]
        mid = z - 4
        mid_urls = [server.url + f"he/{mid}/{x // 16}_{y // 16}.jpg" for x, y in pick[:40]]
        rows["H&E tiles/s, level 0, cold"] = _rate(he)
        rows["H&E tiles/s, level 0, cached"] = _rate(he)
        rows["mIF tiles/s, level 0, cold"] = _rate(mif)
        rows[f"H&E tiles/s, zoom {mid} (16 level-0 px per px), cold"] = _rate(list(dict.fromkeys(
            mid_urls)))
        # baseline: the naive render of one zoom-`mid` tile (level-0 read, then resize)
        osl = openslide.OpenSlide(source.slide.path)
        x, y = pick[0][0] // 16, pick[0][1] // 16
        x0, y0, w, h, d = source.tile_box(mid, x, y)

        def naive() -> np.ndarray:
            region = osl.read_region((x0, y0), 0, (w * d, h * d)).convert("RGB")
            return np.asarray(region.resize((w, h), Image.Resampling.BILINEAR))

        t1 = time.perf_counter()
        ref = naive()
        t_naive = time.perf_counter() - t1
        ours = benchmark.pedantic(lambda: source.he_array(mid, x, y), rounds=5, iterations=1)
        t_ours = min(benchmark.stats.stats.data) if benchmark.stats else None
        # same picture as openslide-python gives from the level we read (the synthetic pyramid
        # repeats one patch per level, so it is not the level-0 picture downsampled)
        level = osl.get_best_level_for_downsample(d + 1e-6)
        ds = osl.level_downsamples[level]
        same = osl.read_region((x0, y0), level, (round(w * d / ds), round(h * d / ds)))
        same = np.asarray(same.convert("RGB").resize((w, h), Image.Resampling.BILINEAR))
        assert ref.shape == ours.shape
        assert np.abs(ours.astype(int) - same.astype(int)).mean() < 2
        if t_ours:
            rows["zoom-out tile: naive level-0 read / ours (x)"] = t_naive / t_ours
        # first paint and pan in Chromium, if present
        if shutil.which("chromium"):
            sup = _support()
            browser = sup.Browser(shutil.which("chromium"))
            try:
                t1 = time.perf_counter()
                browser.goto(server.url)
                browser.wait_for("window.virtimeView && window.virtimeView.ready", 60)
                rows["first paint in Chromium (navigate -> all visible tiles drawn), s"] = (
                    time.perf_counter() - t1)
                browser.evaluate(f"window.virtimeView.setView({source.width / 2}, "
                                 f"{source.height / 2}, 1)")
                browser.wait_for("window.virtimeView.ready", 60)
                steps = []
                for k in range(8):
                    t1 = time.perf_counter()
                    browser.evaluate(f"window.virtimeView.setView({source.width / 2 + 300 * (k + 1)},"
                                     f" {source.height / 2}, 1)")
                    browser.wait_for("window.virtimeView.ready", 60)
                    steps.append(time.perf_counter() - t1)
                rows["pan step of 300 px at level 0 (new tiles), median ms"] = 1000 * float(
                    np.median(steps))
            finally:
                browser.close()
    finally:
        server.close()
    print()
    for k, v in rows.items():
        print(f"  {k}: {v:.3g}")
    assert t_open < 2.0
