"""The batcher writing uint8 tiles straight into a caller's ring of buffers, against its own output."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import tifffile

from virtime.batcher import iter_batches
from virtime.errors import InvalidArgumentError
from virtime.slide import Slide
from virtime.tiling import TilingConfig, make_tile_grid


def _grid(slide):
    return make_tile_grid(slide, TilingConfig(tile_size=256, min_tissue=0.0))


@pytest.fixture(scope="module")
def corrupt_slide(slide_dir, tmp_path_factory):
    """The aperio slide with two level-0 tiles made unreadable (cols 1 and 5 of row 0)."""
    path = tmp_path_factory.mktemp("ring") / "corrupt.svs"
    shutil.copy(slide_dir / "aperio.svs", path)
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        spans = [(page.dataoffsets[i], page.databytecounts[i]) for i in (1, 5)]
    with open(path, "r+b") as f:
        for offset, count in spans:
            f.seek(offset)
            f.write(b"\xff" * count)
    return path


def _ring(n, batch_size, size=256):
    return [np.full((batch_size, size, size, 3), 7, np.uint8) for _ in range(n)]


def _plain(slide, grid, **kw):
    return [(b.tile_index.copy(), b.rgb.copy(), b.tensor, b.failures)
            for b in iter_batches(slide, grid, **kw)]


@pytest.mark.parametrize(("ring_size", "batch_size", "threads"), [(1, 5, 2), (2, 7, 2), (3, 5, 1)])
def test_ring_batches_equal_the_batchers_own_uint8(corrupt_slide, ring_size, batch_size, threads):
    slide = Slide(corrupt_slide)
    grid = _grid(slide)
    assert len(grid) % batch_size  # a last, short batch
    ref = _plain(slide, grid, batch_size=batch_size, threads=threads, pack="float32")
    assert len(ref) > ring_size  # slots are reused
    ring = _ring(ring_size, batch_size)
    addresses = {r.ctypes.data: i for i, r in enumerate(ring)}
    got, slots = [], []
    for batch in iter_batches(slide, grid, batch_size=batch_size, threads=threads, pack="float32",
                              ring=ring):
        assert batch.slot is not None and batch.rgb.ctypes.data == ring[batch.slot].ctypes.data
        assert addresses[batch.rgb.ctypes.data] == batch.slot  # written in place, no copy
        got.append((batch.tile_index.copy(), batch.rgb.copy(), batch.tensor, batch.failures))
        slots.append(batch.slot)
        batch.release()
        batch.release()  # idempotent
    assert len(got) == len(ref)
    assert sorted(set(slots)) == list(range(ring_size))
    failed = [f for *_, fs in got for f in fs]
    assert len(failed) == 2 and [f.x for f in failed] == [256, 1280]
    for (ia, ra, ta, fa), (ib, rb, tb, fb) in zip(got, ref):
        np.testing.assert_array_equal(ia, ib)
        assert ra.shape == rb.shape and ra.dtype == np.uint8
        np.testing.assert_array_equal(ra, rb)  # byte for byte, failed tiles compacted out
        np.testing.assert_array_equal(ta, tb)  # float packing untouched by the ring
        assert fa == fb


def test_a_held_slot_is_not_overwritten(slide_dir):
    slide = Slide(slide_dir / "aperio.svs")
    grid = _grid(slide)
    ref = _plain(slide, grid, batch_size=2, threads=2, pack="none")
    ring = _ring(2, 2)
    it = iter_batches(slide, grid, batch_size=2, threads=2, pack="none", prefetch=4, ring=ring)
    first = next(it)
    second = next(it)  # uses the other slot; the workers now wait for a free one
    assert {first.slot, second.slot} == {0, 1}
    snapshot = first.rgb.copy()
    np.testing.assert_array_equal(snapshot, ref[0][1])
    import time

    time.sleep(0.2)  # workers had time to overwrite a slot if they were going to
    np.testing.assert_array_equal(first.rgb, snapshot)
    with pytest.raises(InvalidArgumentError, match="release one"):
        next(it)  # holding every slot: an error, not a hang
    it.close()


def test_release_errors_and_validation(slide_dir):
    from virtime import _core

    slide = Slide(slide_dir / "aperio.svs")
    grid = _grid(slide)
    with pytest.raises(InvalidArgumentError, match="bytes"):
        next(iter_batches(slide, grid, batch_size=4, ring=_ring(2, 2)))
    with pytest.raises(InvalidArgumentError, match="emit_uint8"):
        next(iter_batches(slide, grid, batch_size=2, emit_uint8=False, ring=_ring(2, 2)))
    with pytest.raises(InvalidArgumentError, match="uint8"):
        next(iter_batches(slide, grid, batch_size=2, ring=[np.zeros((2, 256, 256, 3), np.float32)]))
    params = _core.BatcherParams()
    params.batch_size, params.threads = 2, 1
    pool = _core.Batcher(slide._core, grid.xy[:4], 0, 256, 256, None, params, _ring(1, 2))
    assert pool.ring_size == 1
    raw = pool.next()
    with pytest.raises(InvalidArgumentError, match="not held"):
        pool.release(1 - raw.slot + 5)
    pool.release(raw.slot)
    with pytest.raises(InvalidArgumentError, match="not held"):
        pool.release(raw.slot)
    assert pool.next().slot == 0
    pool.stop()


def test_empty_batches_hand_their_slot_back(corrupt_slide):
    slide = Slide(corrupt_slide)
    grid = _grid(slide)
    tiles = np.array([1, 5, 1, 5, 0], dtype=np.int64)  # batches of 2: failed, failed, one tile
    ring = _ring(1, 2)
    out = list(iter_batches(slide, grid, batch_size=2, threads=2, tiles=tiles, ring=ring))
    assert [len(b) for b in out] == [0, 0, 1]  # a ring of one slot never starved: none held
    np.testing.assert_array_equal(out[-1].rgb[0], slide.read_region(*grid.xy[0], 0, 256, 256))


@pytest.mark.usefixtures("one_torch_thread")
def test_translator_ring_on_cpu_equals_plain_submit(slide_dir, tiny_model):
    """The device path's intake: slots from host_ring, submit(slot=...), recycle after upload."""
    from collections import deque

    from virtime.engines import create_engine
    from virtime.stitch.windows import plan_windows, tile_stride, window_weight
    from virtime.translation.device_path import DeviceTranslator

    slide = Slide(slide_dir / "aperio.svs")
    grid = make_tile_grid(slide, TilingConfig(target_mpp=0.5, tile_size=128, min_tissue=0.0))
    todo = np.arange(10)
    origins, weight = plan_windows(128, 64, 16), window_weight(64, 16)
    eng = create_engine(tiny_model, backend="torch", device="cpu", window=64, max_batch=64)
    dev = DeviceTranslator(eng, weight, 4, origins, 128, tile_stride(128, 16), ring=2)
    held: deque = deque()
    got = []
    for batch in iter_batches(slide, grid, batch_size=3, threads=2, pack="none", tiles=todo,
                              ring=dev.host_ring(3)):
        assert batch.slot is not None
        xy = batch.xy // 2
        ref = dev.submit(batch.rgb.copy(), xy).result()  # a staging copy, as before
        res = dev.submit(batch.rgb, xy, slot=batch.slot).result()
        held.append(batch)
        dev.recycle(held)  # on the CPU the slot is free as soon as submit returned
        assert not held
        np.testing.assert_array_equal(res.positive_fraction, ref.positive_fraction)
        for (qa, *a), (qb, *b) in zip(res.blocks, ref.blocks):
            assert a[:2] == b[:2] and np.array_equal(qa, qb)
        got.append(len(batch))
    assert got == [3, 3, 3, 1]
    with pytest.raises(InvalidArgumentError, match="ring slot"):
        dev.submit(np.zeros((1, 128, 128, 3), np.uint8), np.zeros((1, 2)), slot=0)


@pytest.mark.gpu
def test_cuda_ring_uploads_equal_staged_uploads(slide_dir, tiny_model):
    from collections import deque

    from virtime.engines import create_engine
    from virtime.stitch.windows import plan_windows, tile_stride, window_weight
    from virtime.translation.device_path import DeviceTranslator

    slide = Slide(slide_dir / "aperio.svs")
    grid = make_tile_grid(slide, TilingConfig(target_mpp=0.5, tile_size=128, min_tissue=0.0))
    origins, weight = plan_windows(128, 64, 16), window_weight(64, 16)
    eng = create_engine(tiny_model, backend="torch", device="cuda", window=64, tf32=False)
    dev = DeviceTranslator(eng, weight, 4, origins, 128, tile_stride(128, 16), ring=2)
    ring = dev.host_ring(4)
    held: deque = deque()
    pending = []
    for batch in iter_batches(slide, grid, batch_size=4, threads=2, pack="none",
                              tiles=np.arange(20), ring=ring):
        dev.recycle(held)
        xy = batch.xy // 2
        pending.append((dev.submit(batch.rgb.copy(), xy), dev.submit(batch.rgb, xy,
                                                                     slot=batch.slot)))
        held.append(batch)
    for ref, res in pending:  # no slot was overwritten while its upload was in flight
        a, b = ref.result(), res.result()
        np.testing.assert_array_equal(a.positive_fraction, b.positive_fraction)
        for (qa, *_), (qb, *_) in zip(a.blocks, b.blocks):
            assert np.array_equal(qa, qb)
