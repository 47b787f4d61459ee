"""Tiling: hand-counted grids, level choice, area resampling against numpy, known physical scale."""

from __future__ import annotations

import copy
import math
import pickle

import numpy as np
import pytest

from virtime import errors
from virtime.simulate.slides import write_slide
from virtime.slide import Slide
from virtime.tiling import TilingConfig, make_tile_grid


def _area_resize_numpy(img: np.ndarray, out_w: int, out_h: int) -> np.ndarray:
    """Area interpolation as exact pixel-overlap weight matrices (independent of the C++ code)."""

    def weights(n_in: int, n_out: int) -> np.ndarray:
        scale = n_in / n_out
        w = np.zeros((n_out, n_in))
        for o in range(n_out):
            lo, hi = o * scale, (o + 1) * scale
            for s in range(int(math.floor(lo)), min(n_in, int(math.ceil(hi)))):
                w[o, s] = (min(hi, s + 1) - max(lo, s)) / scale
        return w

    wy, wx = weights(img.shape[0], out_h), weights(img.shape[1], out_w)
    out = np.einsum("ys,sxc->yxc", wy, np.einsum("xs,ysc->yxc", wx, img.astype(np.float64)))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("src,dst", [((64, 64), (32, 32)), ((300, 200), (256, 170)),
                                     ((97, 131), (40, 33)), ((50, 50), (50, 50))])
def test_resize_area_matches_numpy(rng, src, dst):
    from virtime import _core

    img = rng.integers(0, 256, (src[1], src[0], 3), dtype=np.uint8)
    got = _core.resize_area(img, dst[0], dst[1])
    ref = _area_resize_numpy(img, dst[0], dst[1])
    assert np.abs(got.astype(int) - ref.astype(int)).max() <= 1  # float32 vs float64 rounding


def test_grid_hand_count(slide_dir):
    slide = Slide(slide_dir / "aperio.svs")  # 2048 x 1536 at 0.25 um/px
    g = make_tile_grid(slide, TilingConfig(target_mpp=0.25, tile_size=512, min_tissue=0.0))
    assert (g.cols, g.rows, len(g)) == (4, 3, 12)
    assert g.level == 0 and g.read_size == 512
    assert sorted(set(g.xy[:, 0])) == [0, 512, 1024, 1536]
    # Overlap 64 -> stride 448: x = 0, 448, 896, 1344, 1792 (1344 + 512 < 2048 needs a fifth).
    g = make_tile_grid(slide, TilingConfig(tile_size=512, overlap=64, min_tissue=0.0))
    assert sorted(set(g.xy[:, 0])) == [0, 448, 896, 1344, 1792]
    # Rows: 896 + 512 = 1408 < 1536, so a fourth row at 1344 is needed.
    assert sorted(set(g.xy[:, 1])) == [0, 448, 896, 1344]
    assert (g.cols, g.rows) == (5, 4)


def test_level_choice_and_read_size(slide_dir):
    slide = Slide(slide_dir / "aperio.svs")  # levels at 0.25 and 1.0 um/px
    g = make_tile_grid(slide, TilingConfig(target_mpp=1.0, tile_size=128, min_tissue=0.0))
    assert (g.level, g.read_size, g.tile_size_level0) == (1, 128, 512)
    g = make_tile_grid(slide, TilingConfig(target_mpp=0.5, tile_size=256, min_tissue=0.0))
    assert (g.level, g.read_size) == (0, 512)  # read at 0.25 and shrink 2x
    g = make_tile_grid(slide, TilingConfig(target_mpp=0.8, tile_size=100, min_tissue=0.0))
    assert (g.level, g.read_size) == (0, 320)  # 1.0 is coarser than 0.8: read level 0


def test_tissue_filter_keeps_tissue_tiles(slide_dir):
    from virtime.tissue import detect_tissue

    slide = Slide(slide_dir / "aperio.svs")
    tissue = detect_tissue(slide)
    full = make_tile_grid(slide, TilingConfig(tile_size=256, min_tissue=0.0), tissue)
    kept = make_tile_grid(slide, TilingConfig(tile_size=256, min_tissue=0.5), tissue)
    assert 0 < len(kept) < len(full)
    # Independent check of each tile's fraction from the mask itself.
    ds = tissue.downsample
    for (x, y), frac in zip(full.xy[:20], full.tissue_fraction[:20]):
        x0, y0 = int(np.floor(x / ds)), int(np.floor(y / ds))
        x1, y1 = int(np.ceil((x + 256) / ds)), int(np.ceil((y + 256) / ds))
        padded = np.zeros((y1 - y0, x1 - x0), bool)
        sub = tissue.mask[max(y0, 0):y1, max(x0, 0):x1]
        padded[: sub.shape[0], : sub.shape[1]] = sub
        assert frac == pytest.approx(padded.mean())
    assert (kept.tissue_fraction >= 0.5).all()


def test_grid_arrays_view_the_grid_and_outlive_it(slide_dir):
    slide = Slide(slide_dir / "aperio.svs")  # 2048 x 1536: 4 x 3 tiles of 512
    grid = make_tile_grid(slide, TilingConfig(tile_size=512, min_tissue=0.0))
    assert grid.xy is not grid.xy and np.shares_memory(grid.xy, grid.xy)  # views, not copies
    with pytest.raises(AttributeError):
        grid.level = 1
    frame = grid.to_frame()
    xy, colrow = grid.xy, grid.colrow
    del grid
    want = [(512 * c, 512 * r) for r in range(3) for c in range(4)]  # row-major grid order
    assert [tuple(p) for p in xy.tolist()] == want
    assert colrow.tolist() == [[c, r] for r in range(3) for c in range(4)]
    assert frame[["x", "y"]].to_numpy().tolist() == [list(p) for p in want]
    assert (frame["tissue_fraction"] == 1.0).all()


def test_grid_pickles_and_copies_as_a_value(slide_dir):
    from virtime.tiling import TileGrid
    from virtime.tissue import detect_tissue

    slide = Slide(slide_dir / "aperio.svs")
    grid = make_tile_grid(slide, TilingConfig(tile_size=256, overlap=32), detect_tissue(slide))
    for other in (pickle.loads(pickle.dumps(grid)), copy.deepcopy(grid)):
        assert type(other) is TileGrid and len(other) == len(grid)
        for name in ("level", "level_mpp", "read_size", "tile_size", "tile_size_level0",
                     "stride_level0", "cols", "rows"):
            assert getattr(other, name) == getattr(grid, name), name
        for name in ("xy", "colrow", "tissue_fraction"):
            np.testing.assert_array_equal(getattr(other, name), getattr(grid, name))
            assert not np.shares_memory(getattr(other, name), getattr(grid, name))
        assert other.to_frame().equals(grid.to_frame())


def test_resampling_preserves_physical_scale(tmp_path):
    # Vertical stripes with a 16 um period on a 0.25 um/px slide (64 px period at level 0).
    x = np.arange(1024)
    row = np.where((x % 64) < 32, 60, 220).astype(np.uint8)
    rgb = np.ascontiguousarray(np.tile(row[None, :, None], (1024, 1, 3)))
    slide = Slide(write_slide(tmp_path / "stripes.svs", rgb, 0.25, fmt="aperio"))
    from virtime.batcher import iter_batches

    g = make_tile_grid(slide, TilingConfig(target_mpp=1.0, tile_size=128, min_tissue=0.0))
    tile = next(iter_batches(slide, g, batch_size=1, pack="none")).rgb[0, :, :, 0].astype(float)
    spectrum = np.abs(np.fft.rfft(tile.mean(axis=0) - tile.mean()))
    assert int(np.argmax(spectrum)) == 128 // 16  # 16 um at 1 um/px -> 8 cycles per tile


def test_slide_smaller_than_one_tile(tmp_path, rng):
    rgb = rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)
    slide = Slide(write_slide(tmp_path / "tiny.svs", rgb, 0.25, fmt="aperio"))
    with pytest.raises(errors.SlideTooSmallError, match="tiny.svs.*smaller than one 512-px tile"):
        make_tile_grid(slide, TilingConfig())


def test_all_background_slide_gives_zero_tiles(tmp_path):
    from virtime.tissue import detect_tissue

    rgb = np.full((1024, 1024, 3), 244, np.uint8)
    slide = Slide(write_slide(tmp_path / "glass.svs", rgb, 0.5, fmt="aperio"))
    assert len(make_tile_grid(slide, TilingConfig(), detect_tissue(slide))) == 0


def test_bad_tiling_parameters():
    with pytest.raises(errors.InvalidArgumentError):
        TilingConfig(tile_size=256, overlap=256)
