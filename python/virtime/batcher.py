"""Model-ready batches from the C++ worker pool.

Worker threads read tiles, resample them to the model size, normalize stain and pack
ImageNet-normalized NCHW tensors while Python consumes earlier batches (the GIL is released while
the pool works). Batches come in tile order; a tile that fails to read is recorded with its
coordinates and reason and left out, and the run goes on. Only a slide read is skipped that way:
any other error in a worker (a bug such as an invalid argument, exhausted memory) stops the pool,
and iterating raises :class:`~virtime.errors.BatcherError` naming the tile.

With ``ring=`` (a few preallocated ``(B, H, W, 3)`` uint8 arrays, e.g. views of pinned host
memory), the workers write each batch's tiles straight into a free ring slot: ``Batch.rgb`` is a
view of that slot and ``Batch.slot`` names it. The consumer holds the slot until
``Batch.release()`` (once nothing reads it any more, e.g. its upload has completed); the workers
wait for a free slot, so the ring bounds host memory and a slot is never overwritten in use.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Literal

import numpy as np

from virtime import _core
from virtime.errors import InvalidArgumentError
from virtime.slide import Slide
from virtime.tiling import TileGrid

__all__ = ["STAIN_STATUS", "Batch", "TileFailure", "iter_batches"]

#: Meaning of Batch.stain_status values (mirrors the core's StainOutcome).
STAIN_STATUS = {0: "normalized", 1: "fallback_matrix", 2: "passed_through"}


#: A tile the pool could not produce: ``tile_index`` (position in the grid's tile list), ``x``,
#: ``y`` (level-0) and ``reason``; compares and hashes by value.
TileFailure = _core.TileFailure

#: The C++ batch itself, read-only: ``index`` (batch number), ``tile_index`` ((n,) positions in the
#: grid's tile list), ``xy`` ((n, 2) level-0), ``rgb`` ((n, H, W, 3) uint8 or None), ``tensor``
#: ((n, 3, H, W) float32/float16, ImageNet-normalized, or None), ``stain_status`` ((n,) uint8, see
#: :data:`STAIN_STATUS`), ``stain_note``, ``failures`` (:class:`TileFailure` list),
#: ``read_seconds``, ``normalize_seconds``, ``pack_seconds``, ``slot`` (the ring slot ``rgb``
#: views, None without a ring) and ``len(batch)``. The arrays own the batch's buffers (or view
#: the ring slot): nothing is copied. ``release()`` hands the ring slot back to the workers
#: (no-op without a ring, or if done); after it, ``rgb`` may be overwritten by a later batch, so
#: call it only once nothing reads the slot any more (on a GPU: once its upload has completed).
Batch = _core.Batch


def iter_batches(
    slide: Slide,
    grid: TileGrid,
    *,
    normalizer: object | None = None,
    batch_size: int = 16,
    threads: int = 0,
    prefetch: int = 4,
    emit_uint8: bool = True,
    pack: Literal["float32", "float16", "none"] = "float32",
    tiles: np.ndarray | None = None,
    ring: Sequence[np.ndarray] | None = None,
) -> Iterator[Batch]:
    """Yields batches over the grid's tiles (or the subset ``tiles`` of grid indices).

    ``normalizer`` is a fitted stain normalizer from :mod:`virtime.stain` (or None). ``threads=0``
    uses every core. Memory is bounded by ``prefetch`` batches in flight.

    ``ring``: writable C-contiguous uint8 arrays of at least ``batch_size·T·T·3`` bytes each
    (``T`` the grid's tile size; needs ``emit_uint8``). Each batch's tiles are written into one of
    them (``Batch.slot``; ``Batch.rgb`` is a view of it) and it stays the consumer's until
    :meth:`Batch.release`; a batch without tiles hands its slot back at once. Asking for the next
    batch while holding every slot raises :class:`~virtime.errors.InvalidArgumentError`.

    Raises :class:`~virtime.errors.BatcherError` when a worker fails other than by reading the
    slide (unreadable tiles are :attr:`Batch.failures` instead).
    """
    if pack not in ("float32", "float16", "none"):
        raise InvalidArgumentError(f"pack must be float32, float16 or none, not {pack!r}")
    params = _core.BatcherParams()
    params.batch_size = int(batch_size)
    params.threads = int(threads)
    params.prefetch_batches = int(prefetch)
    params.emit_uint8 = bool(emit_uint8)
    params.pack = getattr(_core.PackFormat, pack)
    subset = None if tiles is None else np.asarray(tiles, dtype=np.int64)
    xy = grid.xy if subset is None else grid.xy[subset]
    core_normalizer = None if normalizer is None else getattr(normalizer, "core", normalizer)
    slots = None if ring is None else tuple(ring)  # referenced for as long as the pool runs
    if slots is not None and not emit_uint8:
        raise InvalidArgumentError("a ring of tile buffers needs emit_uint8=True")
    pool = _core.Batcher(
        slide._core, np.ascontiguousarray(xy, dtype=np.int64), grid.level, grid.read_size,
        grid.tile_size, core_normalizer, params, slots, subset,  # positions reported in the grid
    )
    try:
        while (batch := pool.next()) is not None:
            if batch.slot is not None and len(batch) == 0:  # nothing to upload: free the slot now
                batch.release()
            yield batch
    finally:
        pool.stop()
