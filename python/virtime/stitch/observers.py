"""Observers of a streaming canvas: what is derived from the level-0 bands as they are written.

A :class:`~virtime.stitch.canvas.StreamingCanvas` writes its level 0 in row bands. Everything
else a translation writes from that image — the pyramid levels, the thumbnail, the slide
features — used to be computed after the last band by reading level 0 back from disk. A
:class:`BandObserver` instead receives each finished uint8 band once, on the canvas's writer
thread (in band order, while the engine keeps running), and keeps only what it needs:

* :class:`PyramidBuilder` downsamples each band 2x2 and writes level ``k + 1`` a chunk row at a
  time, cascading down the levels (one chunk row of each level held, never a whole level);
* :class:`LevelTap` copies selected channels of one pyramid level (the thumbnail's) as its rows
  are produced.

Each band goes through two calls: :meth:`BandObserver.prepare` on the thread that flushes the
canvas (the tile loop's), where an observer may snapshot state the loop keeps changing (the
tissue under failed tiles, say), and :meth:`BandObserver.on_band` on the writer thread with the
uint8 rows and what ``prepare`` returned. The pyramid is byte-identical to
:func:`~virtime.stitch.omezarr.build_level` over the finished level (same 2x2 means, same edge
rule): pairs of rows never straddle two bands because bands have an even number of rows, and an
odd remainder is carried to the next band.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from virtime.errors import InvalidArgumentError
from virtime.stitch import omezarr

__all__ = ["BandObserver", "LevelTap", "PyramidBuilder"]


class BandObserver(Protocol):
    """Receives the canvas's level-0 bands in order (see the module doc)."""

    def prepare(self, y0: int, y1: int) -> Any:
        """On the flushing thread, before band rows ``y0 .. y1`` go to the writer."""

    def on_band(self, y0: int, rows: NDArray[np.uint8], prepared: Any) -> None:
        """On the writer thread: the band's uint8 rows ``(C, y1 - y0, W)``, once each."""


class PyramidBuilder:
    """Writes pyramid levels ``1 .. n - 1`` from the level-0 bands as they arrive.

    ``group`` is the OME-Zarr group (its arrays ``"0" .. str(n - 1)`` created by
    :func:`~virtime.stitch.omezarr.create_pyramid`); ``chunk`` its chunk edge, so every write
    covers whole chunk rows. ``listeners`` are called as ``f(level, y0, rows)`` for every row
    block of every level, level 0 included (a thumbnail taps its level there).
    """

    def __init__(self, group: Any, shape_yx: tuple[int, int], chunk: int, n_levels: int,
                 listeners: Sequence[Callable[[int, int, NDArray[np.uint8]], None]] = ()) -> None:
        if n_levels < 1 or chunk < 1:
            raise InvalidArgumentError(f"pyramid needs n_levels >= 1 and chunk >= 1, got "
                                       f"{n_levels}, {chunk}")
        self._group = group
        self._shapes = omezarr.pyramid_shapes(shape_yx, n_levels)
        self._chunk = int(chunk)
        self.listeners = list(listeners)
        self._seen = [0] * n_levels  # rows of each level fed so far
        self._carry: list[NDArray[np.uint8] | None] = [None] * n_levels  # odd row left over
        self._queued: list[list[NDArray[np.uint8]]] = [[] for _ in range(n_levels)]

    @property
    def complete(self) -> bool:
        """Whether every row of every level has been produced."""
        return all(seen == shape[0] for seen, shape in zip(self._seen, self._shapes))

    def prepare(self, y0: int, y1: int) -> None:
        return None

    def on_band(self, y0: int, rows: NDArray[np.uint8], prepared: Any = None) -> None:
        if y0 != self._seen[0]:
            raise InvalidArgumentError(f"pyramid: band at row {y0} arrived, expected row "
                                       f"{self._seen[0]} (bands must come in order)")
        self._feed(0, rows)

    def _feed(self, level: int, rows: NDArray[np.uint8]) -> None:
        """Rows of ``level`` (already written): tell the listeners, build the next level."""
        y0 = self._seen[level]
        self._seen[level] += rows.shape[1]
        for listen in self.listeners:
            listen(level, y0, rows)
        nxt = level + 1
        if nxt >= len(self._shapes):
            return
        carry = self._carry[level]
        src = rows if carry is None else np.concatenate([carry, rows], axis=1)
        last = self._seen[level] == self._shapes[level][0]
        take = src.shape[1] if last else src.shape[1] // 2 * 2  # whole row pairs, but the last
        self._carry[level] = None if take == src.shape[1] else src[:, take:].copy()
        if take:
            self._queued[nxt].append(omezarr.downsample_2x(src[:, :take]))
        self._write_ready(nxt)

    def _write_ready(self, level: int) -> None:
        """Writes the whole chunk rows of ``level`` queued so far (all at its end), then feeds
        them on."""
        queued = self._queued[level]
        have = sum(q.shape[1] for q in queued)
        written = self._seen[level]
        end = written + have == self._shapes[level][0]
        n = have if end else have // self._chunk * self._chunk
        if n == 0:
            return
        block = queued[0] if len(queued) == 1 else np.concatenate(queued, axis=1)
        out, rest = block[:, :n], block[:, n:]
        self._queued[level] = [rest] if rest.shape[1] else []
        omezarr.writable_level(self._group, level)[:, written : written + n, :] = out
        self._feed(level, out)


class LevelTap:
    """Keeps channels ``index`` of pyramid level ``level`` as its rows are produced.

    Its :attr:`image` ``(len(index), h, w)`` uint8 is what reading those channels of that
    level from the finished OME-Zarr gives (a thumbnail's source, without the read).
    """

    def __init__(self, level: int, shape_yx: tuple[int, int], index: Sequence[int]) -> None:
        self.level = int(level)
        self.index = list(index)
        self.image = np.zeros((len(self.index), *shape_yx), dtype=np.uint8)
        self.rows_seen = 0

    def __call__(self, level: int, y0: int, rows: NDArray[np.uint8]) -> None:
        if level == self.level:
            self.image[:, y0 : y0 + rows.shape[1]] = rows[self.index]
            self.rows_seen += rows.shape[1]

    @property
    def complete(self) -> bool:
        return self.rows_seen == self.image.shape[1]
