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
