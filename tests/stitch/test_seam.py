"""Seams: a zero-padded CNN run window by window through the planner and the canvas.

The input is a stationary random texture, so away from the image border the CNN's output has the
same statistics everywhere; the reference is the same CNN run on the whole image at once (no
window borders). Zero padding at window edges is the only source of seams, as in the real model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray
from scipy.ndimage import gaussian_filter

from virtime.channels import CHANNEL_NAMES
from virtime.stitch.canvas import StreamingCanvas
from virtime.stitch.windows import plan_windows, tile_stride, window_weight

TILE, WIN = 512, 256
CHANNELS = CHANNEL_NAMES[:4]


def _make_cnn(rng: np.random.Generator) -> list[tuple[NDArray[np.float32], NDArray[np.float32]]]:
    """Three 3x3 conv layers 3 -> 8 -> 8 -> 4 with fixed random weights and biases."""
    layers = []
    for cin, cout in ((3, 8), (8, 8), (8, 4)):
        w = rng.normal(0.0, 1.0 / np.sqrt(9 * cin), (cout, cin, 3, 3)).astype(np.float32)
        b = rng.normal(0.0, 0.5, cout).astype(np.float32)
        layers.append((w, b))
    return layers


def _run_cnn(layers, x: NDArray[np.float32]) -> NDArray[np.float32]:
    """Zero-padded 3x3 convolutions with tanh, sigmoid at the end: (3, h, w) -> (4, h, w)."""
    import torch
    import torch.nn.functional as F

    with torch.no_grad():
        t = torch.from_numpy(np.ascontiguousarray(x))[None]
        for k, (w, b) in enumerate(layers):
            t = F.conv2d(t, torch.from_numpy(w), torch.from_numpy(b), padding=1)
            if k < len(layers) - 1:
                t = torch.tanh(t)
        return torch.sigmoid(t)[0].numpy().astype(np.float32)


def _texture(rng: np.random.Generator, size: int) -> NDArray[np.float32]:
    noise = rng.normal(size=(3, size, size))
    return (1.0 + 0.5 * gaussian_filter(noise, (0, 1.5, 1.5))).astype(np.float32)


def _u8(p: NDArray) -> NDArray[np.int32]:
    """Independent quantisation reference: round half up of 255·p."""
    return np.floor(np.asarray(p, dtype=np.float64) * 255.0 + 0.5).astype(np.int32)


@pytest.fixture(scope="module")
def runs() -> dict[int, tuple[int, list, NDArray[np.float32], NDArray[np.float32]]]:
    """Per overlap: image size, windows (tile_y, x, y, probs) in row-major tile order, weight,
    and the whole-image reference output."""
    rng = np.random.default_rng(20251123)
    layers = _make_cnn(rng)
    results = {}
    for overlap in (0, 64):
        stride = tile_stride(TILE, overlap)
        size = stride + TILE  # a 2 x 2 grid of tiles
        image = _texture(rng, size)
        windows = []
        for ty in range(0, size - TILE + 1, stride):
            for tx in range(0, size - TILE + 1, stride):
                for ox, oy in plan_windows(TILE, WIN, overlap):
                    x, y = tx + ox, ty + oy
                    probs = _run_cnn(layers, image[:, y : y + WIN, x : x + WIN])
                    windows.append((ty, x, y, probs))
        results[overlap] = (size, windows, window_weight(WIN, overlap), _run_cnn(layers, image))
    return results


def _stitch(path: Path, size: int, windows: list, weight: NDArray, factor: int) -> NDArray:
    """Run the windows through StreamingCanvas as the pipeline would; return level 0 as int."""
    import zarr

    h = -(-size // factor)
    canvas = StreamingCanvas(
        path,
        (h, h),
        factor=factor,
        mpp=0.25 * factor,
        channels=CHANNELS,
        chunk=256 if factor == 1 else 32,
    )
    for ty, x, y, probs in windows:
        canvas.flush_until(ty)  # tiles come row-major: nothing above this tile row changes
        canvas.add(probs, x, y, weight)
    canvas.close()
    return np.asarray(zarr.open_group(str(path), mode="r")["0"][:]).astype(np.int32)


@pytest.fixture(scope="module")
def canvases(runs, tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[int, int], NDArray]:
    """Stitched level 0 per (overlap, factor)."""
    tmp = tmp_path_factory.mktemp("seam")
    return {
        (overlap, factor): _stitch(
            tmp / f"o{overlap}f{factor}.ome.zarr",
            runs[overlap][0],
            runs[overlap][1],
            runs[overlap][2],
            factor,
        )
        for overlap in (0, 64)
        for factor in (1, 8)
    }


def _jumps(img: NDArray, axis: int, margin: int) -> NDArray[np.float64]:
    """Mean |difference| of neighbouring pixels along ``axis``, per pair of lines, averaged
    over the other axis (away from the image border by ``margin``) and the channels."""
    img = np.asarray(img, dtype=np.float64)
    if axis == 1:
        img = img.transpose(0, 2, 1)
    inner = img[:, margin:-margin, :]
    return np.abs(np.diff(inner, axis=2)).mean(axis=(0, 1))[margin:-margin]


def _block_mean(p: NDArray, f: int) -> NDArray[np.float64]:
    c, h, w = p.shape
    return p.astype(np.float64).reshape(c, h // f, f, w // f, f).mean(axis=(2, 4))


def test_overlap0_factor1_reproduces_official_layout(runs, canvases) -> None:
    size, windows, weight, _ = runs[0]
    assert np.all(weight == 1.0)
    placed = np.full((len(CHANNELS), size, size), np.nan)
    for _, x, y, probs in windows:
        assert np.isnan(placed[:, y : y + WIN, x : x + WIN]).all()  # official: no overlap at all
        placed[:, y : y + WIN, x : x + WIN] = probs
    assert not np.isnan(placed).any()
    np.testing.assert_array_equal(canvases[(0, 1)], _u8(placed.astype(np.float32)))


@pytest.mark.parametrize("factor", [1, 8])
@pytest.mark.parametrize("axis", [1, 2])
def test_seam_visible_without_overlap_and_gone_with_it(runs, canvases, factor, axis) -> None:
    stats = {}
    for overlap in (0, 64):
        ref = runs[overlap][3]
        canvas = canvases[(overlap, factor)]
        ref_u8 = _u8(_block_mean(ref, factor))
        margin = max(2, 16 // factor)  # stay clear of the image's own zero-padded border
        noise = _jumps(ref_u8, axis, margin).max()  # largest interior neighbour difference
        jumps = _jumps(canvas, axis, margin)
        border = (tile_stride(TILE, overlap)) // factor - margin  # first line of the 2nd tile
        zone = jumps[max(0, border - 64 // factor - 2) : border + 64 // factor + 2]
        err = np.abs(canvas - ref_u8)[:, margin:-margin, margin:-margin].max()
        stats[overlap] = (noise, zone.max(), err)
    noise0, seam0, err0 = stats[0]
    noise64, seam64, err64 = stats[64]
    # Overlap: the lines across the tile border are no rougher than the seamless reference's.
    assert seam64 <= 1.1 * noise64 + 0.05, stats
    assert err64 <= 1, stats  # and the canvas is the whole-image output up to uint8 rounding
    # No overlap: the border line stands out well above the noise level.
    assert seam0 >= 3.0 * noise0, stats
    assert err0 >= (20 if factor == 1 else 8), stats
