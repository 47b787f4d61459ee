"""Prefetch across slides: the next slide is opened and its tissue detected while this one runs.

``virtime translate a.svs b.svs ...`` translates slides one after another; without prefetching the
GPU idles while each slide is opened and its tissue mask computed on a low-resolution level. A
:class:`SlidePrefetcher` does that work for the next slide on one background thread while the
current slide's batches run, and :func:`~virtime.translation.translate` takes the result through
``prepared=`` (the same objects a sequential run computes, so the outputs are identical). A slide
that fails to open or to segment is left to ``translate`` itself, which then raises the error as
a sequential run would.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["PreparedSlide", "SlidePrefetcher", "prepare_slide"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreparedSlide:
    """A slide opened and its tissue detected ahead of its translation."""

    path: Path
    slide: Any
    tissue: Any
    seconds: float
    mpp: float | None = None  # the level-0 mpp override it was opened with

    def fits(self, path: str | os.PathLike[str], mpp: float | None) -> bool:
        """Whether this is ``path`` opened with the same ``mpp`` override."""
        return Path(path) == self.path and mpp == self.mpp


def prepare_slide(path: str | os.PathLike[str], mpp: float | None = None) -> PreparedSlide:
    """Open ``path`` and detect its tissue, as :func:`~virtime.translation.translate` does."""
    from virtime.slide import Slide
    from virtime.tissue import detect_tissue

    t0 = time.perf_counter()
    slide = Slide(path, mpp=mpp)
    tissue = detect_tissue(slide)
    return PreparedSlide(Path(path), slide, tissue, time.perf_counter() - t0, mpp)


class SlidePrefetcher:
    """Prepares slides of ``paths`` one ahead, on one background thread.

    ``take(path)`` returns the prepared slide (waiting if its preparation is still running, or
    None if it failed: ``translate`` then meets the error itself) and starts the next path.

    >>> with SlidePrefetcher(paths, mpp=None) as ahead:          # doctest: +SKIP
    ...     for p in paths:
    ...         translate(p, model, out, config, prepared=ahead.take(p))
    """

    def __init__(self, paths: Sequence[str | os.PathLike[str]], mpp: float | None = None,
                 enabled: bool = True) -> None:
        self.paths = [Path(p) for p in paths]
        self.mpp = mpp
        self.enabled = enabled and len(self.paths) > 1
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="virtime-prefetch") if self.enabled \
            else None
        self._futures: dict[int, Future[PreparedSlide]] = {}
        self._next = 0
        self._submit(0)  # overlaps whatever the caller does before the first slide

    def _submit(self, i: int) -> None:
        if self._pool is not None and i < len(self.paths) and i not in self._futures:
            self._futures[i] = self._pool.submit(prepare_slide, self.paths[i], self.mpp)

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
