"""The C++ batcher against a plain Python loop over the same tiles, and its failure handling."""

from __future__ import annotations

import pickle
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import tifffile

from pack_reference import packed_nchw

from virtime.batcher import Batch, TileFailure, iter_batches
from virtime.errors import BatcherError
from virtime.slide import Slide
from virtime.tiling import TilingConfig, make_tile_grid

MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])


def _grid(slide, **kw):
    return make_tile_grid(slide, TilingConfig(**{"tile_size": 256, "min_tissue": 0.0, **kw}))


def _changed(grid, **change):
    """A stand-in for ``grid`` with some of what the batcher reads changed (grids are read-only)."""
    read = {name: getattr(grid, name) for name in ("xy", "level", "read_size", "tile_size")}
    return SimpleNamespace(**{**read, **change})


@pytest.mark.parametrize("threads,batch_size", [(1, 4), (2, 3), (3, 16)])
def test_batches_match_python_reference(slide_dir, threads, batch_size):
    slide = Slide(slide_dir / "aperio.svs")
    grid = _grid(slide)
    seen = []
    for batch in iter_batches(slide, grid, batch_size=batch_size, threads=threads, prefetch=2):
        assert not batch.failures
        for k, idx in enumerate(batch.tile_index):
            x, y = grid.xy[idx]
            ref = slide.read_region(x, y, 0, 256, 256)
            np.testing.assert_array_equal(batch.rgb[k], ref)
            expected = ((ref / 255.0 - MEAN) / STD).transpose(2, 0, 1)
            np.testing.assert_allclose(batch.tensor[k], expected, atol=1e-5)
            seen.append(int(idx))
        # bit for bit the float32 order of operations the device path follows
        np.testing.assert_array_equal(batch.tensor, packed_nchw(batch.rgb))
    assert seen == list(range(len(grid)))  # every tile once, in order


def test_float16_packing(slide_dir):
    slide = Slide(slide_dir / "aperio.svs")
    grid = _grid(slide)
    b16 = next(iter_batches(slide, grid, batch_size=4, pack="float16"))
    b32 = next(iter_batches(slide, grid, batch_size=4, pack="float32"))
    assert b16.tensor.dtype == np.float16
    np.testing.assert_array_equal(b16.tensor, b32.tensor.astype(np.float16))


def test_resampled_tiles_match_area_reference(slide_dir):
    from virtime import _core

    slide = Slide(slide_dir / "aperio.svs")
    grid = make_tile_grid(slide, TilingConfig(target_mpp=0.5, tile_size=128, min_tissue=0.0))
    assert grid.read_size == 256
    batch = next(iter_batches(slide, grid, batch_size=2))
    x, y = batch.xy[1]
    raw = slide.read_region(x, y, 0, 256, 256)
    block_mean = raw.reshape(128, 2, 128, 2, 3).mean(axis=(1, 3))
    assert np.abs(batch.rgb[1].astype(float) - block_mean).max() <= 0.5 + 1e-6
    np.testing.assert_array_equal(batch.rgb[1], _core.resize_area(raw, 128, 128))


def test_corrupt_tile_is_recorded_and_run_continues(slide_dir, tmp_path):
    """A slide-read error (OpenSlide cannot decode a tile) is the one failure that is skipped."""
    path = tmp_path / "corrupt.svs"
    shutil.copy(slide_dir / "aperio.svs", path)
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        offset, count = page.dataoffsets[5], page.databytecounts[5]  # tile (col 5, row 0)
        tiles_across = -(-page.imagewidth // page.tilewidth)
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(b"\xff" * count)  # not a zlib stream any more
    slide = Slide(path)
    grid = _grid(slide)
    ok, failed = [], []
    for batch in iter_batches(slide, grid, batch_size=5, threads=2):
        ok += [int(i) for i in batch.tile_index]
        failed += batch.failures
    bad_x, bad_y = (5 % tiles_across) * 256, (5 // tiles_across) * 256
    assert [(f.x, f.y) for f in failed] == [(bad_x, bad_y)]
    assert failed == [TileFailure(failed[0].tile_index, bad_x, bad_y, failed[0].reason)]
    assert grid.xy[failed[0].tile_index].tolist() == [bad_x, bad_y]
    assert "corrupt.svs" in failed[0].reason and "read_region" in failed[0].reason
    assert len(ok) == len(grid) - 1  # every other tile still read (the handle was renewed)


@pytest.mark.parametrize(("bug", "change", "says"), [
    # a bug in what the caller asks for: read_region's invalid-argument error in every worker
    ("invalid argument", {"level": 99}, r"level 99 out of range"),
    # a read buffer of 2^30 x 2^30 x 3 bytes: operator new throws std::bad_alloc in the worker
    ("bad_alloc", {"read_size": 2**30}, r"std::bad_alloc"),
])
def test_a_worker_bug_stops_the_run_instead_of_failing_tiles(slide_dir, bug, change, says):
    """Only slide reads become failed tiles: any other worker error is raised by the batch call."""
    slide = Slide(slide_dir / "aperio.svs")
    grid = _changed(_grid(slide), **change)
    failed = []
    with pytest.raises(BatcherError, match=says) as caught:
        for batch in iter_batches(slide, grid, batch_size=3, threads=2, prefetch=2):
            failed += batch.failures  # the old pool recorded every tile here and finished
    assert failed == []
    assert "aperio.svs" in str(caught.value) and "tile " in str(caught.value)
    assert isinstance(caught.value, RuntimeError)


def test_a_worker_bug_with_a_ring_stops_the_run(slide_dir):
    """The same with caller-owned ring slots: the consumer is woken, not left waiting for a slot."""
    slide = Slide(slide_dir / "aperio.svs")
    grid = _changed(_grid(slide), level=99)
    ring = [np.empty((2, 256, 256, 3), np.uint8) for _ in range(2)]
    with pytest.raises(BatcherError, match="level 99"):
        for _ in iter_batches(slide, grid, batch_size=2, threads=2, ring=ring):
            pass


def test_empty_tile_list(slide_dir):
    slide = Slide(slide_dir / "aperio.svs")
    grid = _grid(slide)
    assert list(iter_batches(slide, grid, tiles=np.zeros(0, dtype=np.int64))) == []


def test_early_stop_does_not_hang(slide_dir):
    slide = Slide(slide_dir / "aperio.svs")
    it = iter_batches(slide, _grid(slide), batch_size=1, prefetch=1, threads=2)
    next(it)
    it.close()  # generator finalizer stops and joins the workers


def test_a_subset_reports_grid_positions(slide_dir):
    slide = Slide(slide_dir / "aperio.svs")
    grid = _grid(slide)
    tiles = np.array([7, 2, 9, 4, 11])
    batches = list(iter_batches(slide, grid, batch_size=2, threads=2, tiles=tiles))
    assert np.concatenate([b.tile_index for b in batches]).tolist() == tiles.tolist()
    for b in batches:
        np.testing.assert_array_equal(b.xy, grid.xy[b.tile_index])


def test_batches_are_read_only_views_that_outlive_the_pool(slide_dir):
    slide = Slide(slide_dir / "aperio.svs")
    grid = _grid(slide)
    batches = list(iter_batches(slide, grid, batch_size=4, threads=2, prefetch=1))
    assert all(isinstance(b, Batch) for b in batches)
    b = batches[1]
    assert b.rgb is b.rgb and b.tensor is b.tensor and b.xy is b.xy  # made once, not per access
    with pytest.raises(AttributeError):
        b.xy = np.zeros((4, 2), np.int64)
    assert len(b) == 4
    tensor = b.tensor
    del b, batches  # the arrays own the buffers: they stay valid without the batch and the pool
    x, y = grid.xy[4]
    want = packed_nchw(slide.read_region(x, y, 0, 256, 256)[None])
    np.testing.assert_array_equal(tensor[:1], want)


def test_tile_failure_compares_and_prints_by_value():
    a = TileFailure(3, 512, 0, "cannot decode")
    same = TileFailure(3, 512, 0, "cannot decode")
    assert a == same and hash(a) == hash(same)
    assert a != TileFailure(3, 512, 0, "other") and a != (3, 512, 0, "cannot decode")
    assert repr(a) == "TileFailure(tile_index=3, x=512, y=0, reason='cannot decode')"
    assert pickle.loads(pickle.dumps(a)) == a
