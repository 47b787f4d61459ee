"""Exact sharpness across tile borders: pixel pairs that straddle a boundary between two tiles.

Sharpness is a sum over 4-neighbour pixel pairs (see :mod:`virtime.features.partials`). Pairs
inside a tile are summed by the kernel; a pair whose two pixels lie in different tiles is summed
here. Each tile leaves its four one-pixel edges in a :class:`BoundaryLedger`; when the tile on the
other side of a boundary arrives (in any order, or in another accumulator that is merged later),
the overlapping stretch of the two edges is paired and summed, and fully paired edges are dropped.
Only edges still waiting for a neighbour are held (for raster-order streaming: about one row of
tiles' bottom edges), so memory stays bounded by the canvas perimeter, not its area.

Tiles must not overlap; edges on the canvas border simply never find a partner.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Edge", "BoundaryLedger"]


@dataclass
class Edge:
    """A one-pixel strip along a boundary line.

    ``values`` (K, n) in native units and ``tissue`` (n,) bool, starting at canvas coordinate
    ``start`` along the line; ``unpaired`` counts positions not yet paired.
    """

    start: int
    values: np.ndarray
    tissue: np.ndarray
    unpaired: int

    @property
    def stop(self) -> int:
        return self.start + self.tissue.shape[0]


class BoundaryLedger:
    """Edges waiting for their neighbour, keyed by (orientation, boundary coordinate, side).

    Orientation ``"v"``: a vertical line between columns ``x-1`` and ``x``; ``"h"``: a horizontal
    line between rows ``y-1`` and ``y``. Side 0 is the tile before the line, side 1 after it.
    """

    def __init__(self, n_channels: int) -> None:
        self.n_channels = n_channels
        self._pending: dict[tuple[str, int, int], list[Edge]] = {}

    def __len__(self) -> int:
        return sum(len(v) for v in self._pending.values())

    def add(self, orient: str, line: int, side: int, edge: Edge) -> np.ndarray:
        """Pairs ``edge`` with waiting edges across the line; returns per-channel sum |a-b|."""
        total = np.zeros(self.n_channels)
        others = self._pending.get((orient, line, 1 - side), [])
        keep: list[Edge] = []
        for other in others:
            lo = max(edge.start, other.start)
            hi = min(edge.stop, other.stop)
            if hi > lo and edge.unpaired > 0:
                a = slice(lo - edge.start, hi - edge.start)
                b = slice(lo - other.start, hi - other.start)
                both = edge.tissue[a] & other.tissue[b]
                if both.any():
                    va = edge.values[:, a][:, both].astype(np.float64)
                    vb = other.values[:, b][:, both].astype(np.float64)
                    total += np.abs(va - vb).sum(axis=1)
                edge.unpaired -= hi - lo
                other.unpaired -= hi - lo
            if other.unpaired > 0:
                keep.append(other)
        if others:
            if keep:
                self._pending[(orient, line, 1 - side)] = keep
            else:
                del self._pending[(orient, line, 1 - side)]
        if edge.unpaired > 0:
            self._pending.setdefault((orient, line, side), []).append(edge)
        return total

    def add_tile(
        self, prob: np.ndarray, idx: np.ndarray, tissue: np.ndarray, y0: int, x0: int
    ) -> np.ndarray:
        """Registers the four edges of a tile (``prob`` (C, h, w); ``idx`` analysed channels)."""
        h, w = tissue.shape
        total = np.zeros(self.n_channels)
        if h == 0 or w == 0:
            return total
        t = tissue.astype(bool, copy=False)
        specs = (
            ("v", x0, 1, y0, prob[idx, :, 0], t[:, 0]),
            ("v", x0 + w, 0, y0, prob[idx, :, w - 1], t[:, w - 1]),
            ("h", y0, 1, x0, prob[idx, 0, :], t[0, :]),
            ("h", y0 + h, 0, x0, prob[idx, h - 1, :], t[h - 1, :]),
        )
        for orient, line, side, start, vals, tis in specs:
            edge = Edge(start, np.array(vals), np.array(tis), tis.shape[0])
            total += self.add(orient, line, side, edge)
        return total

    def absorb(self, other: BoundaryLedger) -> np.ndarray:
        """Moves every waiting edge of ``other`` in here, pairing across the two; returns sums."""
        total = np.zeros(self.n_channels)
        for (orient, line, side), edges in other._pending.items():
            for edge in edges:
                copy = Edge(edge.start, edge.values, edge.tissue, edge.unpaired)
                total += self.add(orient, line, side, copy)
        return total
