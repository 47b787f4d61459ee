"""The static per-slide page: self-contained (data URIs only), every image decodes at the expected
size, the protein grid and tables are there, it is written by virtime translate, and headless
Chromium opens it from a file with no request leaving the file."""

from __future__ import annotations

import base64
import html
import io
import re
from pathlib import Path

import numpy as np
import pytest

from virtime.channels import PROTEIN_CHANNELS, channel_index
from virtime.view import composite_rgb, slide_panels, write_slide_page

_IMG = re.compile(r"<img alt='([^']*)' src='data:image/jpeg;base64,([^']+)'")


def _decode(data: str | bytes) -> np.ndarray:
    from PIL import Image

    raw = base64.b64decode(data) if isinstance(data, str) else data
    return np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"))


def test_composite_formulas():
    p = np.array([[[255, 0]], [[255, 128]]], np.uint8)  # CD8 then CK, 1 x 2 pixels
    on_black = composite_rgb(p, ["CD8", "CK"], opacity=1.0)
    np.testing.assert_array_equal(on_black[0, 0], [255, 255, 255])  # magenta screen cyan = white
    np.testing.assert_array_equal(on_black[0, 1], [0, 128, 128])
    he = np.full((1, 2, 3), 100, np.uint8)
    over = composite_rgb(p, ["CD8", "CK"], he, opacity=0.5)
    first = 100 * 0.5 + 0.5 * np.array([255, 0, 255])
    np.testing.assert_array_equal(over[0, 0], np.floor(first * 0.5 + 0.5 * np.array([0, 255, 255])
                                                       + 0.5))


def test_panels_show_the_planted_channels(output_dir, syn):
    panels = slide_panels(output_dir, ["CD8", "CK"], max_px=128)
    cd8 = _decode(panels["CD8"]).astype(int)
    assert cd8.shape == (96, 128, 3)  # the pyramid level at 128 px: canvas / 2
    r0, r1, c0, c1 = (v // 2 for v in syn.CD8_BOX)
    inside = cd8[r0 + 2:r1 - 2, c0 + 2:c1 - 2]
    assert np.abs(inside - [255, 0, 255]).mean() < 4  # JPEG tolerance
    assert cd8[:r0 - 8].max() < 20 and cd8[r1 + 8:].max() < 20  # JPEG rings near edges
    truth = np.zeros((23, 96, 128), np.uint8)
    truth[channel_index("CK"), :10] = 255
    gt = _decode(slide_panels(output_dir, ["CK"], max_px=128, probs=truth)["CK"]).astype(int)
    assert np.abs(gt[:8] - [0, 255, 255]).mean() < 4 and gt[18:].max() < 20


def test_slide_page_is_self_contained(output_dir):
    path = write_slide_page(output_dir)
    text = path.read_text()
    assert not list(output_dir.glob(".index.html.*"))
    imgs = _IMG.findall(text)
    alts = [html.unescape(a) for a, _ in imgs]
    assert alts[:3] == ["H&E", "composite", "overlay"] and alts[3:] == list(PROTEIN_CHANNELS)
    sizes = {html.unescape(a): _decode(d).shape for a, d in imgs}
    assert sizes["H&E"] == sizes["composite"] == (192, 256, 3)  # canvas at <= 512 px
    assert sizes["CD8"] == (96, 128, 3)  # the grid: pyramid level at <= 192 px
    assert not re.search(r"(src|href)=['\"](?!data:)", text)
    assert "<script" not in text and "<link" not in text
    assert "linear-gradient(to right,#000,#FF00FF)" in text  # CD8's colour bar
    assert "12 tiles" in text and "tumour_density" in text and "0.25" in text
    assert len(text) < 400_000


@pytest.mark.slow
def test_chromium_opens_the_page_from_a_file(output_dir, browser):
    path = write_slide_page(output_dir)
    browser.goto(path.as_uri())
    res = browser.evaluate("Array.from(document.images).map(i => [i.alt, i.complete, "
                           "i.naturalWidth, i.naturalHeight])")
    assert len(res) == 3 + len(PROTEIN_CHANNELS)
    assert all(ok and w > 0 for _, ok, w, _ in res)
    assert {(a, w, h) for a, _, w, h in res if a in ("H&E", "CD8")} == {("H&E", 256, 192),
                                                                         ("CD8", 128, 96)}
    urls = browser.requested_urls()
    assert all(u.startswith(("data:", path.as_uri())) for u in urls), urls


@pytest.mark.slow
def test_translate_writes_the_page(tiny_model, tmp_path):
    import virtime
    from virtime.simulate.slides import make_slide
    from virtime.translation import TranslateConfig

    slide = make_slide(tmp_path / "p.svs", 512, 384, mpp=0.5, seed=3)
    cfg = TranslateConfig(tile_size=128, output_mpp=2.0, backend="onnxruntime",
                          show_progress=False, batch_size=4, window_batch=16, threads=2)
    res = virtime.translate(slide, tiny_model, tmp_path / "out", cfg)
    page = Path(res.output_dir) / "index.html"
    assert page.is_file()
    text = page.read_text()
    assert len(_IMG.findall(text)) == 3 + len(PROTEIN_CHANNELS)
    assert "Slide features" in text and "CD8" in text
    import pandas as pd

    feats = pd.read_parquet(Path(res.output_dir) / "features.parquet").iloc[0]
    pair = next(c for c in feats.index if c.endswith(".or_density"))
    assert f"<th>{pair}</th>" in text  # the slide-level features, one row each


@pytest.mark.slow  # decodes 200 MB of slide tiles
def test_page_of_a_flat_slide_reads_it_in_bounded_blocks(output_dir, tmp_path, rng, syn):
    """A single-level 8192² TIFF: no read is larger than the strip budget (a bound that does
    not depend on the slide's size), the level is read once for the whole page, and the page's
    H&E is the slide's exact area mean (known tile by tile)."""
    from virtime.simulate.slides import write_flat_slide
    from virtime.slide import Slide
    from virtime.stitch.thumbnail import STRIP_BYTES

    colours = rng.integers(60, 200, (32, 32, 3), dtype=np.uint8)
    colours = np.sort(colours, axis=1)  # smooth-ish: few JPEG artefacts at tile edges
    flat = Slide(write_flat_slide(tmp_path / "flat.tif", colours, mpp=0.5), mpp=0.5)
    assert flat.level_count == 1 and flat.dimensions == (8192, 8192)
    spy = syn.ReadSpy(flat)
    path = write_slide_page(output_dir, slide=spy)
    assert max(spy.read_bytes) <= STRIP_BYTES < 8192 * 8192 * 3
    assert sum(spy.read_bytes) == 8192 * 8192 * 3  # every pixel once: one pass for all panels
    he = _decode(dict((html.unescape(a), d) for a, d in _IMG.findall(path.read_text()))["H&E"])
    # the page's H&E is 256 x 192 (the canvas' size): a tile is exactly 8 x 6 output pixels
    expected = np.repeat(np.repeat(colours, 6, axis=0), 8, axis=1).astype(int)
    assert he.shape == expected.shape
    assert np.abs(he.astype(int) - expected).mean() < 3  # JPEG tolerance
