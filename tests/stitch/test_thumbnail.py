"""Thumbnail composition: plain H&E where nothing is predicted, channel colour where certain."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from virtime.channels import CHANNEL_NAMES, channel_index
from virtime.errors import InvalidArgumentError
from virtime.stitch.canvas import StreamingCanvas
from virtime.stitch.thumbnail import render_thumbnail, thumbnail_from_zarr, write_png


def test_zero_probability_leaves_the_he_and_certainty_shows_the_colour(rng) -> None:
    he = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    probs = np.zeros((len(CHANNEL_NAMES), 6, 8), np.uint8)
    probs[channel_index("CD8"), :3] = 255  # top half: certain CD8 (#FF00FF)
    out = render_thumbnail(he, probs, channels=("DAPI", "CD8", "CK"), alpha=1.0)
    np.testing.assert_array_equal(out[3:], he[3:])
    np.testing.assert_array_equal(out[:3], np.broadcast_to([255, 0, 255], (3, 8, 3)))
    # Half opacity, one channel at probability 1: halfway between H&E and the colour.
    half = render_thumbnail(he, probs, channels=("CD8",), alpha=0.5)
    expected = np.floor(0.5 * he[:3].astype(float) + 0.5 * np.array([255, 0, 255]) + 0.5)
    np.testing.assert_array_equal(half[:3], expected)


def test_two_channels_mix_by_probability() -> None:
    he = np.zeros((1, 1, 3), np.uint8)
    probs = np.array([[[255]], [[255]]], np.uint8)  # DAPI blue and CK cyan, both certain
    out = render_thumbnail(he, probs, channels=("DAPI", "CK"), alpha=1.0)
    np.testing.assert_array_equal(out[0, 0], [0, 128, 255])  # mean of (0,0,255) and (0,255,255)


def test_bad_inputs(rng) -> None:
    he = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    with pytest.raises(InvalidArgumentError):
        render_thumbnail(he, np.zeros((5, 4, 4), np.uint8), channels=("DAPI", "CD8"))
    with pytest.raises(InvalidArgumentError):
        render_thumbnail(he, np.zeros((2, 4, 4), np.float32), channels=("DAPI", "CD8"))
    with pytest.raises(InvalidArgumentError):
        render_thumbnail(he, np.zeros((1, 4, 4), np.uint8), channels=("CD8",), alpha=2.0)


def test_png_from_zarr_round_trip(tmp_path, rng) -> None:
    probs = rng.random((len(CHANNEL_NAMES), 40, 60), dtype=np.float32)
    canvas = StreamingCanvas(tmp_path / "t.ome.zarr", (40, 60), factor=1, mpp=2.0, chunk=16)
    canvas.add(probs, 0, 0)
    canvas.close()
    he = rng.integers(0, 256, (80, 120, 3), dtype=np.uint8)  # twice the size: gets resized
    rgb = thumbnail_from_zarr(
        tmp_path / "t.ome.zarr", he, ("CD8", "CK"), max_size=32, png_path=tmp_path / "thumb.png"
    )
    assert rgb.shape == (20, 30, 3)  # finest level with longer side <= 32 is level 1
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "thumb.png")), rgb)
    write_png(tmp_path / "again.png", rgb)
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".png") == [
        "again.png",
        "thumb.png",
    ]


# -- #15 defect 7b: the slide's H&E is read in strips, downsampled as it goes ----------------------
class _ArraySlide:
    """A one-level 'slide' over an array that records the height of every read."""

    def __init__(self, rgb: np.ndarray) -> None:
        self.rgb = rgb
        self.level_count = 1
        self.level_dimensions = [(rgb.shape[1], rgb.shape[0])]
        self.level_downsamples = [1.0]
        self.reads: list[int] = []
        self.starts: list[int] = []
        self.blocks: list[tuple[int, int, int, int]] = []  # (x, y, w, h) of every read
        self.properties: dict[str, str] = {}

    def read_region(self, x, y, level, w, h):
        self.reads.append(h)
        self.starts.append(y)
        self.blocks.append((x, y, w, h))
        return self.rgb[y : y + h, x : x + w].copy()


def _area_mean(rgb: np.ndarray, shape_out: tuple[int, int]) -> np.ndarray:
    """Exact area average by numpy: repeat each pixel to a common multiple grid, then block-mean."""
    h, w = rgb.shape[:2]
    ho, wo = shape_out
    ly, lx = np.lcm(h, ho), np.lcm(w, wo)
    big = np.repeat(np.repeat(rgb.astype(np.float64), ly // h, axis=0), lx // w, axis=1)
    return big.reshape(ho, ly // ho, wo, lx // wo, 3).mean(axis=(1, 3))


@pytest.mark.parametrize("shape_out", [(25, 30), (21, 17), (130, 70)])  # integer, odd, upsampling
def test_strip_thumbnail_equals_whole_image_mean(rng, shape_out) -> None:
    from virtime.stitch.thumbnail import slide_he_reader

    rgb = rng.integers(0, 256, (100, 120, 3), dtype=np.uint8)
    slide = _ArraySlide(rgb)
    strip_bytes = 7 * 120 * 3  # seven rows at a time
    got = slide_he_reader(slide, strip_bytes=strip_bytes)(shape_out)
    assert max(slide.reads) == 7 and sum(slide.reads) == 100
    if shape_out == (25, 30):  # whole 4x4 blocks: the plain block mean
        expected = np.floor(rgb.reshape(25, 4, 30, 4, 3).mean(axis=(1, 3)) + 0.5).astype(np.uint8)
        np.testing.assert_array_equal(got, expected)
    # rounded to nearest (a tie may go either way)
    assert np.abs(got - _area_mean(rgb, shape_out)).max() <= 0.5 + 1e-9


def _covers_once(blocks, shape) -> bool:
    seen = np.zeros(shape, np.int64)
    for x, y, w, h in blocks:
        seen[y : y + h, x : x + w] += 1
    return bool((seen == 1).all())


def test_strips_follow_the_tile_rows_and_give_the_same_thumbnail(rng) -> None:
    """A read boundary inside a tile would decode that tile twice: reads are whole tiles."""
    from virtime.stitch.thumbnail import slide_he_reader

    rgb = rng.integers(0, 256, (100, 120, 3), dtype=np.uint8)
    plain = _ArraySlide(rgb)
    tiled = _ArraySlide(rgb)
    tiled.properties = {"openslide.level[0].tile-height": "16"}
    strip_bytes = 20 * 120 * 3  # twenty rows: not a multiple of the 16-row tiles
    want = slide_he_reader(plain, strip_bytes=strip_bytes)((21, 17))
    got = slide_he_reader(tiled, strip_bytes=strip_bytes)((21, 17))
    np.testing.assert_array_equal(got, want)
    assert all(y % 16 == 0 for y in tiled.starts)
    assert all(n % 16 == 0 for n in tiled.reads[:-1]) and sum(tiled.reads) == 100


def test_a_wide_level_is_read_in_blocks_of_whole_tiles(rng) -> None:
    """When one row of tiles is larger than the strip budget (a wide single-level slide), reads
    are narrower blocks of whole tiles, none above the budget, each pixel read once; the
    thumbnail is the exact area mean all the same."""
    from virtime.stitch.thumbnail import slide_he_reader

    rgb = rng.integers(0, 256, (100, 120, 3), dtype=np.uint8)
    tiled = _ArraySlide(rgb)
    tiled.properties = {"openslide.level[0].tile-height": "16",
                        "openslide.level[0].tile-width": "8"}
    strip_bytes = 7 * 120 * 3  # less than one full-width row of 16-row tiles
    got = slide_he_reader(tiled, strip_bytes=strip_bytes)((21, 17))
    assert np.abs(got - _area_mean(rgb, (21, 17))).max() <= 0.5 + 1e-9
    assert max(w * h * 3 for _, _, w, h in tiled.blocks) <= strip_bytes
    assert all(x % 8 == 0 and y % 16 == 0 for x, y, _, _ in tiled.blocks)
    assert _covers_once(tiled.blocks, rgb.shape[:2])


def test_translation_thumbnail_uses_strips(tmp_path, rng, monkeypatch) -> None:
    """write_thumbnail never asks the slide for more than one strip of rows at a time."""
    from virtime.io.slide_folder import SlideFolder
    from virtime.stitch import thumbnail
    from virtime.stitch.thumbnail import slide_he_reader
    from virtime.translation import outputs
    from virtime.translation.config import TranslateConfig

    probs = rng.random((len(CHANNEL_NAMES), 20, 24), dtype=np.float32)
    canvas = StreamingCanvas(tmp_path / SlideFolder.ZARR, (20, 24), factor=1, mpp=2.0, chunk=8)
    canvas.add(probs, 0, 0)
    canvas.close()
    rgb = rng.integers(0, 256, (400, 480, 3), dtype=np.uint8)
    slide = _ArraySlide(rgb)
    monkeypatch.setattr(thumbnail.slide_he_reader, "__kwdefaults__", {"strip_bytes": 480 * 3 * 50})
    config = TranslateConfig(thumbnail_channels=("CD8", "CK"))
    outputs.write_thumbnail(slide, tmp_path, config)
    assert max(slide.reads) == 50 and sum(slide.reads) == 400
    png = np.asarray(Image.open(tmp_path / "thumbnail.png"))
    he = slide_he_reader(_ArraySlide(rgb))((20, 24))
    assert np.abs(he - _area_mean(rgb, (20, 24))).max() <= 0.5 + 1e-9
    expected = render_thumbnail(he, np.asarray(
        __import__("zarr").open_group(str(tmp_path / SlideFolder.ZARR), mode="r")["0"])[
        [channel_index("CD8"), channel_index("CK")]], ("CD8", "CK"))
    np.testing.assert_array_equal(png, expected)
