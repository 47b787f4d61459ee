"""Viewer tiles against numpy: nearest sampling of the stored canvas, the slide's own pixels, the
tissue outline, hover statistics, and the checks that refuse an unfinished folder."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from virtime.channels import channel_index
from virtime.errors import InputDataError, InvalidArgumentError
from virtime.view import LRUCache, ViewSource, check_output_dir


@pytest.fixture(scope="module")
def source(output_dir):
    return ViewSource(output_dir)


def _stored(syn) -> np.ndarray:
    return np.floor(syn.canvas_truth().astype(np.float64) * 255 + 0.5).astype(np.uint8)


def test_geometry_and_info(source, syn):
    assert (source.width, source.height) == syn.SLIDE_WH
    assert source.max_zoom == 2  # 1024 px: 4 tiles of 256 at level 0, one at zoom 0
    assert source.tile_box(0, 0, 0) == (0, 0, 256, 192, 4)
    assert source.tile_box(2, 3, 2) == (768, 512, 256, 256, 1)
    with pytest.raises(InvalidArgumentError):
        source.tile_box(2, 4, 0)
    info = source.info()
    assert info["canvas"] == {"width": syn.CANVAS[1], "height": syn.CANVAS[0], "mpp": 2.0}
    assert info["default_channels"] == ["DAPI", "CD8", "CK"]
    assert info["channels"][channel_index("CD8")]["color"] == "#FF00FF"
    assert info["tiles"] == 12 and info["has_mask"]


@pytest.mark.parametrize(("z", "tx", "ty"), [(0, 0, 0), (1, 0, 0), (1, 1, 1), (2, 1, 0), (2, 3, 2)])
def test_mif_tile_is_nearest_sampling_of_the_canvas(source, syn, z, tx, ty):
    x0, y0, w, h, d = source.tile_box(z, tx, ty)
    ref = _stored(syn)[channel_index("CD8")]
    cols = (x0 + (np.arange(w) + 0.5) * d) // syn.F  # canvas pixel under each tile pixel centre
    rows = (y0 + (np.arange(h) + 0.5) * d) // syn.F
    expect = ref[rows.astype(int)][:, cols.astype(int)]
    np.testing.assert_array_equal(source.mif_array(channel_index("CD8"), z, tx, ty), expect)


def test_coarse_zoom_reads_a_coarse_pyramid_level(tmp_path, syn):
    out = syn.make_output(tmp_path, "S2")
    src = ViewSource(out)
    src.levels[0] = type(src.levels[0])(0, None, src.levels[0].px)  # level 0 must not be read
    src.max_zoom = 3  # as for a slide twice as wide: zoom 0 is 8 level-0 pixels per tile pixel
    level1 = np.asarray(src.levels[1].array[channel_index("CK")])
    d = src.downsample(0)
    assert src.levels[1].px <= d < src.levels[2].px
    tile = src.mif_array(channel_index("CK"), 0, 0, 0)
    assert tile.shape == (96, 128)
    rows = ((np.arange(96) + 0.5) * d // src.levels[1].px).astype(int)
    cols = ((np.arange(128) + 0.5) * d // src.levels[1].px).astype(int)
    np.testing.assert_array_equal(tile, level1[rows][:, cols])


def test_he_tile_is_the_slide_region(source, syn):
    he = source.he_array(2, 1, 1)
    np.testing.assert_array_equal(he, source.slide.read_region(256, 256, 0, 256, 256))
    coarse = source.he_array(0, 0, 0)
    assert coarse.shape == (192, 256, 3)
    # the mean colour of the whole slide survives the downsampling
    full = source.slide.read_region(0, 0, 0, *syn.SLIDE_WH).reshape(-1, 3).mean(0)
    np.testing.assert_allclose(coarse.reshape(-1, 3).mean(0), full, atol=2.0)


def test_tissue_outline_is_the_mask_boundary(source, syn):
    F = syn.F
    rgba = source.mask_array(2, 0, 0)  # level 0, tile x 0..255, y 0..255; mask rows 20.. cols 30..
    alpha = rgba[..., 3] > 0
    ys, xs = np.nonzero(alpha)
    assert ys.min() == 20 * F and xs.min() == 30 * F
    # a 1-pixel outline: inside the rectangle is transparent, its first row and column are drawn
    assert alpha[20 * F, 30 * F:].all() and alpha[20 * F:, 30 * F].all()
    assert not alpha[20 * F + 1:, 30 * F + 1:].any() and not alpha[: 20 * F].any()


def test_hover_reports_values_and_the_tile(source, syn):
    F, TILE_PX = syn.F, syn.TILE_PX
    r0, _, c0, _ = (40, 100, 60, 140)
    x, y = (c0 + 1) * F + 1, (r0 + 1) * F + 1
    res = source.at(x, y, [channel_index("CD8"), channel_index("CK")])
    assert res["values"] == {"CD8": 255, "CK": 0}
    k = (y // TILE_PX) * 4 + x // TILE_PX
    assert res["tile"]["tile"] == k
    assert res["tile"]["channels"]["CD8"][0] == pytest.approx((k + 1) / 100)
    assert source.at(-5, 3)["tile"] is None


def test_unfinished_or_missing_folders_are_refused(output_dir, tmp_path):
    with pytest.raises(InputDataError, match="no such output folder"):
        check_output_dir(tmp_path / "nope")
    copy = tmp_path / "copy"
    shutil.copytree(output_dir, copy)
    (copy / "summary.json").unlink()
    with pytest.raises(InputDataError, match="not finished"):
        ViewSource(copy)
    (copy / "summary.json").write_text(json.dumps({"status": "running"}))
    with pytest.raises(InputDataError, match="status 'running'"):
        check_output_dir(copy)


def test_lru_cache_keeps_to_its_budget():
    cache = LRUCache(max_bytes=250)
    made = []
    for k in range(5):
        cache.get_or_make(k, lambda k=k: made.append(k) or bytes(100))
    assert len(cache) == 2 and made == [0, 1, 2, 3, 4]
    cache.get_or_make(4, lambda: b"x")
    assert cache.hits == 1
