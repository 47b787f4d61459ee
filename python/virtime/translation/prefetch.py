"""Prefetch across slides: the next slide is opened and its tissue detected while this one runs.

``virtime translate a.svs b.svs ...`` translates slides one after another; without prefetching the
GPU idles while each slide is opened and its tissue mask computed on a low-resolution level. A
:class:`SlidePrefetcher` does that work for the next slide on one background thread while the
current slide's batches run, and :func:`~virtime.translation.run.translate_slide` takes the
result through ``prepared=`` (the same objects a sequential run computes, so the outputs are
identical). A slide that fails to open or to segment is left to ``translate`` itself, which then
raises the error as a sequential run would.

With a model and a config (``read_ahead=`` batches), the first batches of the next slide's tiles
are read too, in the device loop's format (uint8 tiles, no float packing): the grid is built as
``translate`` builds it, and the batches ride on the opened slide until
:class:`~virtime.translation.device_path.DeviceBatchStep` takes them with
:func:`take_read_ahead`, which hands them over only when they are exactly the first batches that
loop would read (same grid, same tiles from the start of its to-do list, same batch size, stain
normalization and tile size); otherwise they are dropped and the loop reads everything itself. So
the outputs never depend on prefetching. Cohort workers use the same preparation
(:mod:`virtime.cohort.worker`) for the next slide queued on them.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["PreparedSlide", "ReadAhead", "SlidePrefetcher", "prepare_slide", "take_read_ahead",
           "with_read_ahead"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreparedSlide:
    """A slide opened and its tissue detected ahead of its translation."""

    path: Path
    slide: Any
    tissue: Any
    seconds: float
    mpp: float | None = None  # the level-0 mpp override it was opened with
    read_ahead: int = 0  # batches of tiles read ahead (they ride on ``slide``, see take_read_ahead)

    def fits(self, path: str | os.PathLike[str], mpp: float | None) -> bool:
        """Whether this is ``path`` opened with the same ``mpp`` override."""
        return Path(path) == self.path and mpp == self.mpp


_READ_AHEAD_ATTR = "_virtime_read_ahead"  # where a slide's read-ahead batches wait for the loop


@dataclass
class ReadAhead:
    """The first batches of a slide's tiles, read before its translation (device-loop format)."""

    grid: Any
    batches: list[Any]
    tiles: np.ndarray  # the grid indices the batches cover, in order
    batch_size: int
    tile_size: int
    normalize: Any
    seconds: float
    batch_params: dict[str, Any] = field(default_factory=dict)
    batcher_normalizer: str | None = None  # the name of the normalizer the batcher applied

    def matches(self, grid: Any, todo: np.ndarray, config: Any,
                batcher_normalizer: Any = None) -> bool:
        """Whether these are exactly the first batches the loop over ``todo`` would read, with
        ``batcher_normalizer`` applied by the batcher (None: stain left to the device)."""
        m = len(self.tiles)
        return (m <= len(todo) and np.array_equal(np.asarray(todo[:m]), self.tiles)
                and self.batcher_normalizer == getattr(batcher_normalizer, "name", None)
                and self.batch_size == int(config.batch_size)
                and self.tile_size == int(config.tile_size)
                and (self.normalize is config.normalize or self.normalize == config.normalize)
                and grid.level == self.grid.level and grid.read_size == self.grid.read_size
                and grid.tile_size == self.grid.tile_size
                and np.array_equal(grid.xy, self.grid.xy))


def prepare_slide(path: str | os.PathLike[str], mpp: float | None = None, *, model: Any = None,
                  config: Any = None, read_ahead: int = 0,
                  wanted: Callable[[], bool] | None = None) -> PreparedSlide:
    """Open ``path`` and detect its tissue, as :func:`~virtime.translation.translate` does.

    With ``model`` and ``config`` (a :class:`~virtime.translation.TranslateConfig`) and
    ``read_ahead > 0``, also read the first ``read_ahead`` batches of its tiles for the device
    loop (only while ``wanted()`` says the slide has not started yet). A failed read-ahead is only
    logged: ``translate`` meets the error itself.
    """
    from virtime.slide import Slide
    from virtime.tissue import detect_tissue

    t0 = time.perf_counter()
    slide = Slide(path, mpp=mpp)
    tissue = detect_tissue(slide)
    n = 0
    if read_ahead > 0 and model is not None and config is not None and (wanted is None or wanted()):
        try:
            n = _read_ahead(slide, tissue, model, config, int(read_ahead))
        except Exception as exc:  # noqa: BLE001 - translate raises it again where it matters
            log.debug("read-ahead of %s failed (%s); the loop reads its tiles itself", path, exc)
    return PreparedSlide(Path(path), slide, tissue, time.perf_counter() - t0, mpp, n)


def _read_ahead(slide: Any, tissue: Any, model: Any, config: Any, n: int) -> int:
    """Reads the first ``n`` batches of the slide's fresh-run tiles onto ``slide``."""
    from virtime.batcher import iter_batches
    from virtime.tiling import make_tile_grid
    from virtime.translation.request import check_model, check_slide_mpp, resolve_normalizer

    t0 = time.perf_counter()
    model_mpp, _, _ = check_model(model, config)
    check_slide_mpp(slide, config, model_mpp)  # a refused slide is not read at all
    grid = make_tile_grid(slide, config.tiling_for(model_mpp), tissue)
    tiles = np.arange(min(len(grid), n * int(config.batch_size)), dtype=np.int64)
    if not len(tiles):
        return 0
    params = {"batch_size": int(config.batch_size), "threads": config.threads,
              "emit_uint8": True, "pack": "none"}
    normalizer = resolve_normalizer(config.normalize)
    # As the device loop: Macenko / Reinhard run on the device (their torch twins), others here.
    on_device = getattr(normalizer, "name", None) in ("macenko", "reinhard")
    host_norm = None if on_device else normalizer
    batches = list(iter_batches(slide, grid, normalizer=host_norm, tiles=tiles, **params))
    setattr(slide, _READ_AHEAD_ATTR, ReadAhead(grid, batches, tiles, int(config.batch_size),
                                               int(config.tile_size), config.normalize,
                                               time.perf_counter() - t0, params,
                                               getattr(host_norm, "name", None)))
    return len(batches)


def take_read_ahead(slide: Any, grid: Any, todo: np.ndarray, config: Any,
                    batcher_normalizer: Any = None) -> ReadAhead | None:
    """The batches read ahead for ``slide`` if they are the first ones the device loop over
    ``todo`` with ``config`` (its batcher applying ``batcher_normalizer``) would read (see
    :class:`ReadAhead`); dropped either way."""
    head = getattr(slide, "__dict__", {}).pop(_READ_AHEAD_ATTR, None)
    if head is None:
        return None
    if not head.matches(grid, np.asarray(todo), config, batcher_normalizer):
        log.info("%s: read-ahead batches do not match this run (resumed, or other batch "
                 "settings); reading them again", getattr(slide, "path", "?"))
        return None
    return head


def with_read_ahead(head: ReadAhead | None, rest: Callable[[], Iterator[Any]] | None
                    ) -> Iterator[Any]:
    """The read-ahead batches, then those of ``rest()`` (started at once on a helper thread, so
    its first batch is being read while the read-ahead ones run)."""
    if head is None:
        if rest is not None:
            yield from rest()
        return
    if rest is None:
        yield from head.batches
        return
    it = rest()
    box: dict[str, Any] = {}

    def prime() -> None:
        try:
            box["batch"] = next(it, None)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer's thread
            box["error"] = exc

    thread = threading.Thread(target=prime, name="virtime-prefetch-rest", daemon=True)
    thread.start()
    try:
        yield from head.batches
        head.batches = []
        thread.join()
        if "error" in box:
            raise box["error"]
        if box.get("batch") is not None:
            yield box["batch"]
            yield from it
    finally:
        thread.join()
        close = getattr(it, "close", None)
        if close is not None:
            close()  # stops the batcher's worker threads


class SlidePrefetcher:
    """Prepares slides of ``paths`` one ahead, on one background thread.

    ``take(path)`` returns the prepared slide (waiting if its preparation is still running, or
    None if it failed: ``translate`` then meets the error itself) and starts the next path.

    >>> with SlidePrefetcher(paths, mpp=None) as ahead:          # doctest: +SKIP
    ...     for p in paths:
    ...         translate_slide(p, model, out, config, prepared=ahead.take(p))
    """

    def __init__(self, paths: Sequence[str | os.PathLike[str]], mpp: float | None = None,
                 enabled: bool = True, *, model: Any = None, config: Any = None,
                 read_ahead: int = 0) -> None:
        self.paths = [Path(p) for p in paths]
        self.mpp = mpp
        # With a model and a config: also the first read_ahead batches (device loop only).
        self._ahead = {"model": model, "config": config, "read_ahead": int(read_ahead)}
        self.enabled = enabled and len(self.paths) > 1
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="virtime-prefetch") if self.enabled \
            else None
        self._futures: dict[int, Future[PreparedSlide]] = {}
        self._next = 0
        self._submit(0)  # overlaps whatever the caller does before the first slide

    def _submit(self, i: int) -> None:
        if self._pool is not None and i < len(self.paths) and i not in self._futures:
            self._futures[i] = self._pool.submit(prepare_slide, self.paths[i], self.mpp,
                                                 **self._ahead)

    def take(self, path: str | os.PathLike[str]) -> PreparedSlide | None:
        """The prepared ``path`` (the next in order) and, in the background, the one after it."""
        if not self.enabled:
            return None
        path = Path(path)
        try:
            i = self.paths.index(path, self._next)
        except ValueError:
            return None
        self._next = i + 1
        fut = self._futures.pop(i, None)
        self._submit(i + 1)  # the next slide is prepared while this one is translated
        if fut is None:
            return None  # not prefetched: translate prepares it itself
        try:
            prepared = fut.result()
        except Exception as exc:  # noqa: BLE001 - translate raises it again, as a sequential run would
            log.debug("prefetch of %s failed (%s); translate will report it", path, exc)
            return None
        log.info("%s: opened and tissue detected ahead (%.2f s)", path, prepared.seconds)
        return prepared

    def close(self) -> None:
        if self._pool is not None:
            for fut in self._futures.values():
                fut.cancel()
            self._pool.shutdown(wait=True)
            self._pool = None

    def __enter__(self) -> SlidePrefetcher:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
