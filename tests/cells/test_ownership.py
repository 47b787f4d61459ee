"""Tile-border ownership: every cell reported once, the same table whatever the tiling."""

from __future__ import annotations

import numpy as np
import pytest

from virtime.cells import CellCollector, CellConfig, cells_from_map

from .conftest import blob_map

_KEY = ["x", "y", "nucleus_area_um2", "cell_area_um2", "CD3.mean", "CK.mean", "Ki67.mean"]


def _sorted(frame):
    return frame.sort_values(["y", "x"]).reset_index(drop=True)


def test_a_cell_straddling_two_tiles_is_counted_once_and_whole():
    probs = blob_map((64, 128), [(32, 64, 6)], {"CD3": [0]})  # centred on the tile border
    whole = cells_from_map(probs, 0.5, tile_size=128).frame
    split = cells_from_map(probs, 0.5, tile_size=64).frame
    assert len(whole) == len(split) == 1
    np.testing.assert_allclose(split[_KEY].to_numpy(), whole[_KEY].to_numpy())
    assert split["CD3.positive"].all()


@pytest.mark.slow
@pytest.mark.parametrize("tile, overlap", [(64, 0), (96, 0), (128, 16)])
def test_the_cell_table_does_not_depend_on_the_tiling(gt_region, tile, overlap):
    probs, _ = gt_region
    ref = _sorted(cells_from_map(probs, 0.5, tile_size=400).frame)
    got = _sorted(cells_from_map(probs, 0.5, tile_size=tile, overlap=overlap).frame)
    assert len(got) == len(ref)
    np.testing.assert_allclose(got[_KEY].to_numpy(), ref[_KEY].to_numpy(), atol=1e-4)
    assert (got["phenotype"] == ref["phenotype"]).all()
    assert (got["compartment"] == ref["compartment"]).all()


def test_tiles_in_any_order_and_a_failed_tile():
    nuclei = [(20 + 40 * i, 20 + 40 * j, 5) for i in range(4) for j in range(4)]
    probs = blob_map((160, 160), nuclei)
    cols = rows = 4
    rr, cc = np.mgrid[0:rows, 0:cols]
    colrow = np.stack([cc.ravel(), rr.ravel()], 1)

    def run(order, failed=()):
        col = CellCollector(CellConfig(smooth_um=0))
        col.start(colrow=colrow, xy_model=colrow * 40, tile_size=40, stride=40, model_mpp=0.5)
        col.fail(list(failed))
        for t in order:
            if t in failed:
                continue
            x, y = colrow[t] * 40
            col.add(np.array([t]), probs[None, :, y : y + 40, x : x + 40])
        out = col.finish()
        assert col.peak_tiles_held <= 16
        return out

    fwd = run(range(16))
    rev = run(range(15, -1, -1))
    assert fwd.cells == rev.cells == 16
    assert fwd.tiles == 16
    lost = run(range(16), failed=(5,))
    assert lost.cells == 15  # the failed tile's own cell, nothing else
    assert set(lost.frame["tile"]) == set(range(16)) - {5}


def test_memory_holds_about_one_row_of_tiles():
    probs = blob_map((40 * 12, 40 * 3), [(20, 20, 5)])
    s = cells_from_map(probs, 0.5, tile_size=40)
    col = CellCollector()
    rr, cc = np.mgrid[0:12, 0:3]
    colrow = np.stack([cc.ravel(), rr.ravel()], 1)
    col.start(colrow=colrow, xy_model=colrow * 40, tile_size=40, stride=40, model_mpp=0.5)
    for t, (c, r) in enumerate(colrow):
        col.add(np.array([t]), probs[None, :, r * 40 : r * 40 + 40, c * 40 : c * 40 + 40])
        if t > 8:
            assert len(col._data) <= 2 * 3 + 2  # two rows of a 3-wide grid, not the slide
    assert col.finish().cells == s.cells == 1
