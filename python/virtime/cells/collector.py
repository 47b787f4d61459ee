"""Streaming cell segmentation of a tiled slide: tiles in (any order), one cell table out.

:class:`CellCollector` receives each tile's full-resolution probabilities as the translation
produces them. A tile is segmented once every neighbour within the halo has arrived (or failed), on
a region made of the tile and ``halo_um`` of its neighbours: where tiles overlap, the region holds
the blended probabilities ``Σ w·p / Σ w`` of all the tiles that cover a pixel (the canvas's blend),
so a cell on a border is measured whole and the same from either side. Each cell is reported by the
one tile that owns its nucleus centroid:

* the tile whose core ``[col·S, (col+1)·S) × [row·S, (row+1)·S)`` (``S`` the stride, model pixels)
  contains it, when that tile is in the grid;
* otherwise (the overhang of an edge tile, past the last core) the covering tile with the largest
  ``(row, col)``.

The rule depends only on the grid, so no cell is counted twice or lost, whatever the tile size.
Memory: tiles wait for their lower neighbours, so about one row of tiles is held (as uint8
probabilities ×255 by default, like the OME-Zarr), independent of the slide's height; a tile is
dropped when it and all its neighbours are done.

:func:`cells_from_map` runs the same machinery over an in-memory map (tests, benchmarks, ground
truth).
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from virtime.cells.config import CellConfig
from virtime.cells.gating import GatingTable
from virtime.cells.region import cells_in_region
from virtime.cells.table import CELLS_FILE, CellTableWriter, cell_frame
from virtime.errors import InvalidArgumentError
from virtime.stitch.window_geometry import WindowGeometry

__all__ = ["CellCollector", "CellSummary", "cells_from_map", "start_translation_cells",
           "tile_probabilities"]

log = logging.getLogger(__name__)


@dataclass
class CellSummary:
    """What :meth:`CellCollector.finish` produced."""

    cells: int
    tiles: int
    tumour_mm2: float
    seconds: float
    path: Path | None = None
    frame: pd.DataFrame | None = None
    by_phenotype: dict[str, int] = field(default_factory=dict)


def tile_probabilities(logits: NDArray[np.floating], origins: Any, weight: NDArray[np.floating],
                       tile_size: int) -> NDArray[np.float32]:
    """One tile's blended probabilities ``(C, T, T)`` from its windows' logits ``(k, C, w, w)``.

    ``Σ_k w·σ(l_k) / Σ_k w`` over the windows at ``origins`` (``(x, y)`` inside the tile): the
    tile-local part of the canvas blend (uniform weights in the official layout).
    """
    geometry = WindowGeometry(weight, 1, origins, tile_size, tile_size)
    return _blend_logits(geometry, logits)


def _blend_logits(geometry: WindowGeometry, logits: Any) -> NDArray[np.float32]:
    """:func:`tile_probabilities` for a validated geometry (one tile's ``(k, C, h, w)`` logits)."""
    import torch

    lg = torch.as_tensor(np.asarray(logits, np.float32) if not torch.is_tensor(logits) else logits)
    p = torch.sigmoid(lg.float()).cpu().numpy()
    if geometry.spans_tile:
        return p[0]
    windows = geometry.numpy()
    return windows.blend(windows.weigh(p, out=p)[None])[0]  # p is ours: weighted in place


class CellCollector:
    """Cells of a slide from per-tile probabilities (see the module docstring).

    Use: :meth:`start` with the grid, :meth:`add` per batch of tiles (or :meth:`add_windows`
    with the raw window logits), :meth:`fail` for tiles that will never come, :meth:`finish`.

    Parameters
    ----------
    config
        Segmentation and measurement settings.
    gating
        Phenotype table (default: the shipped one).
    store
        dtype tiles wait in: ``"uint8"`` (probability ×255, 23 bytes/pixel) or ``"float32"``.
    """

    def __init__(self, config: CellConfig = CellConfig(), gating: GatingTable | None = None,
                 *, store: str = "uint8") -> None:
        from virtime.cells.gating import default_gating

        if store not in ("uint8", "float16", "float32"):
            raise InvalidArgumentError(f"store must be uint8, float16 or float32, got {store!r}")
        self.config = config
        self.gating = gating or default_gating()
        self.store = store
        self._started = False
        self.seconds = 0.0

    # -- setup -------------------------------------------------------------------------------
    def start(self, *, colrow: NDArray[np.integer], xy_model: NDArray[np.integer], tile_size: int,
              stride: int, model_mpp: float, scale: float = 1.0,
              todo: NDArray[np.integer] | None = None,
              tile_weight: NDArray[np.floating] | None = None,
              out_dir: str | os.PathLike[str] | None = None, model_hash: str = "") -> None:
        """Prepares for one slide.

        Parameters
        ----------
        colrow, xy_model
            ``(n, 2)`` grid position and top-left (global model pixels) of every grid tile.
        tile_size, stride
            Tile side and grid step in model pixels (``stride < tile_size`` when tiles overlap).
        model_mpp, scale
            The model's µm/px and model pixels per level-0 pixel.
        todo
            Tiles that will be added (default: all).
        tile_weight
            ``(T, T)`` blend weight of a whole tile on the canvas (sum of its windows' weights);
            ``None``: uniform.
        out_dir
            Where ``cells.parquet`` goes; ``None`` keeps the table in memory (returned by finish).
        """
        self._colrow = np.asarray(colrow, np.int64).reshape(-1, 2)
        self._xy = np.asarray(xy_model, np.int64).reshape(-1, 2)
        n = len(self._colrow)
        todo_idx = np.arange(n) if todo is None else np.asarray(todo, np.int64)
        self._T, self._S = int(tile_size), int(stride)
        if not 0 < self._S <= self._T:
            raise InvalidArgumentError(f"stride {stride} must be in (0, tile_size={tile_size}]")
        self._mpp, self._scale = float(model_mpp), float(scale)
        self._halo = int(math.ceil(self.config.halo_um / self._mpp))
        self._reach = max(1, int(math.ceil((self._halo + self._T - self._S) / self._S)))
        cols = int(self._colrow[:, 0].max()) + 1 if n else 1
        rows = int(self._colrow[:, 1].max()) + 1 if n else 1
        self._lattice = np.full((rows + 2, cols + 2), -1, np.int64)  # padded by one on each side
        for t in todo_idx:
            c, r = self._colrow[t]
            self._lattice[r + 1, c + 1] = t
        self._weight = None if tile_weight is None else np.asarray(tile_weight, np.float32)
        self._expected = {int(t) for t in todo_idx}
        self._data: dict[int, NDArray] = {}
        self._arrived: set[int] = set()
        self._done: set[int] = set()
        self._dead: set[int] = set()
        self._tumour_px = 0
        self._counts: dict[str, int] = {}
        self._n_cells = 0
        self._frames: list[pd.DataFrame] = []
        self._writer = None
        self._out = None if out_dir is None else Path(out_dir)
        if self._out is not None:
            self._writer = CellTableWriter(self._out / CELLS_FILE, model_hash=model_hash,
                                           config=self.config, gating=self.gating)
        self._started = True
        self.seconds = 0.0
        self.peak_tiles_held = 0

    # -- input -------------------------------------------------------------------------------
    def add(self, tiles: NDArray[np.integer], probs: NDArray[np.floating]) -> None:
        """Adds tiles' probabilities ``(n, 23, T, T)`` (tile-local blend, see tile_probabilities).

        Float probabilities in [0, 1], or uint8 ``rint(255·p)`` (what the device path downloads:
        with the default uint8 store they are kept as they come, exactly as the host path's
        float probabilities are encoded).
        """
        t0 = time.perf_counter()
        for t, p in zip(np.asarray(tiles).ravel(), probs):
            t = int(t)
            if t not in self._expected:
                raise InvalidArgumentError(f"cells: tile {t} was not announced to start()")
            self._data[t] = self._encode(np.asarray(p))
            self._arrived.add(t)
        self.peak_tiles_held = max(self.peak_tiles_held, len(self._data))
        for t in np.asarray(tiles).ravel():
            self._process_ready(int(t))
        self.seconds += time.perf_counter() - t0

    def add_windows(self, tiles: NDArray[np.integer], logits: Any, origins: Any,
                    weight: NDArray[np.floating]) -> None:
        """Adds tiles from their window logits ``(n·k, 23, w, w)`` in tile-major order."""
        t0 = time.perf_counter()
        k = len(origins)
        geometry = WindowGeometry(weight, 1, origins, self._T, self._T)
        probs = [_blend_logits(geometry, logits[i * k : (i + 1) * k])
                 for i in range(len(tiles))]
        self.seconds += time.perf_counter() - t0
        self.add(tiles, probs)  # type: ignore[arg-type]

    def fail(self, tiles: Any) -> None:
        """Tiles that will never arrive (failed reads): neighbours stop waiting for them."""
        t0 = time.perf_counter()
        for t in tiles:
            t = int(t)
            if t in self._expected and t not in self._arrived:
                self._dead.add(t)
        for t in tiles:
            self._process_ready(int(t))
        self.seconds += time.perf_counter() - t0

    def finish(self, extra_metadata: dict[str, Any] | None = None) -> CellSummary:
        """Segments the tiles still waiting, closes the table and returns the summary."""
        t0 = time.perf_counter()
        for t in sorted(self._arrived - self._done):
            self._process(t)
        self._data.clear()
        tumour_mm2 = self._tumour_px * (self._mpp * 1e-3) ** 2
        path = frame = None
        if self._writer is not None:
            path = self._writer.close({"tumour_mm2": repr(tumour_mm2), "tiles": len(self._done),
                                       "model_mpp": self._mpp, **(extra_metadata or {})})
            self._writer = None
        else:
            from virtime.cells.table import cell_frame as _cf

            frame = (pd.concat(self._frames, ignore_index=True) if self._frames else
                     _cf({"x": np.zeros(0), "y": np.zeros(0), "nucleus_px": np.zeros(0),
                          "cell_px": np.zeros(0), "mean": np.zeros((0, 23)),
                          "ck_fraction": np.zeros(0)}, model_mpp=self._mpp, gating=self.gating))
            frame.attrs["tumour_mm2"] = tumour_mm2
        self.seconds += time.perf_counter() - t0
        self._started = False
        return CellSummary(self._n_cells, len(self._done), tumour_mm2, self.seconds, path, frame,
                           dict(sorted(self._counts.items())))

    def close(self) -> None:
        """Drops an unfinished table (after an error); a no-op after :meth:`finish`."""
        if self._writer is not None:
            self._writer.abort()
            self._writer = None
        self._data = {}

    # -- internals ---------------------------------------------------------------------------
    def _encode(self, p: NDArray) -> NDArray:
        if p.shape[1:] != (self._T, self._T):
            raise InvalidArgumentError(f"cells: tile probabilities {p.shape}, expected (C, {self._T}, "
                                       f"{self._T})")
        if p.dtype == np.uint8:  # already ×255 (device path): a copy, so the batch can go
            return p.copy() if self.store == "uint8" else self._decode(p).astype(self.store)
        if self.store == "uint8":
            return np.rint(np.clip(p, 0.0, 1.0) * 255.0).astype(np.uint8)
        return p.astype(self.store)

    def _decode(self, a: NDArray) -> NDArray[np.float32]:
        if a.dtype == np.uint8:
            return a.astype(np.float32) * np.float32(1.0 / 255.0)
        return a.astype(np.float32, copy=False)

    def _neighbours(self, t: int) -> list[int]:
        c, r = self._colrow[t]
        k = self._reach
        win = self._lattice[max(r + 1 - k, 0) : r + 2 + k, max(c + 1 - k, 0) : c + 2 + k]
        return [int(u) for u in win.ravel() if u >= 0 and u != t]

    def _settled(self, u: int) -> bool:
        return u in self._arrived or u in self._dead

    def _process_ready(self, t: int) -> None:
        for u in [t, *self._neighbours(t)]:
            if u in self._arrived and u not in self._done and all(
                    self._settled(v) for v in self._neighbours(u)):
                self._process(u)

    def _owner(self, x: NDArray[np.float64], y: NDArray[np.float64]) -> NDArray[np.int64]:
        """The owning tile of global model-pixel positions (-1: none), see the module docstring."""
        S, T = self._S, self._T
        c = np.floor(x / S).astype(np.int64)
        r = np.floor(y / S).astype(np.int64)
        rows, cols = self._lattice.shape

        def look(cc: NDArray, rr: NDArray) -> NDArray[np.int64]:
            ok = (cc >= -1) & (rr >= -1) & (cc < cols - 1) & (rr < rows - 1)
            out = np.full(cc.shape, -1, np.int64)
            out[ok] = self._lattice[rr[ok] + 1, cc[ok] + 1]
            return out

        own = look(c, r)
        for dc, dr in ((-1, 0), (0, -1), (-1, -1)):  # overhang: largest (row, col) covering it
            miss = own < 0
            if not miss.any():
                break
            cand = look(c[miss] + dc, r[miss] + dr)
            ok = cand >= 0
            cx, cy = self._xy[np.maximum(cand, 0), 0], self._xy[np.maximum(cand, 0), 1]
            ok &= (x[miss] >= cx) & (x[miss] < cx + T) & (y[miss] >= cy) & (y[miss] < cy + T)
            idx = np.flatnonzero(miss)[ok]
            own[idx] = cand[ok]
        return own

    def _region(self, t: int) -> tuple[NDArray[np.float32], tuple[int, int]]:
        m, T = self._halo, self._T
        x0, y0 = int(self._xy[t, 0]) - m, int(self._xy[t, 1]) - m
        size = T + 2 * m
        first = self._data[t]
        acc = np.zeros((first.shape[0], size, size), np.float32)
        ws = np.zeros((size, size), np.float32)
        for u in [t, *self._neighbours(t)]:
            a = self._data.get(u)
            if a is None:
                continue
            ux, uy = int(self._xy[u, 0]), int(self._xy[u, 1])
            ax0, ay0 = max(ux, x0), max(uy, y0)
            ax1, ay1 = min(ux + T, x0 + size), min(uy + T, y0 + size)
            if ax0 >= ax1 or ay0 >= ay1:
                continue
            src = self._decode(a[:, ay0 - uy : ay1 - uy, ax0 - ux : ax1 - ux])
            dst = (slice(None), slice(ay0 - y0, ay1 - y0), slice(ax0 - x0, ax1 - x0))
            if self._weight is None:
                acc[dst] += src
                ws[dst[1:]] += 1.0
            else:
                wt = self._weight[ay0 - uy : ay1 - uy, ax0 - ux : ax1 - ux]
                acc[dst] += src * wt
                ws[dst[1:]] += wt
        np.divide(acc, ws, out=acc, where=ws > 0)
        return acc, (x0, y0)

    def _process(self, t: int) -> None:
        probs, origin = self._region(t)
        cells, tumour_px = cells_in_region(probs, origin, self._mpp, self.config,
                                           owns=lambda x, y: self._owner(x, y) == t)
        self._tumour_px += tumour_px
        frame = cell_frame(cells, model_mpp=self._mpp, scale=self._scale, config=self.config,
                           gating=self.gating, tile=t)
        self._done.add(t)
        self._n_cells += len(frame)
        for k, v in frame["phenotype"].value_counts().items():
            self._counts[str(k)] = self._counts.get(str(k), 0) + int(v)
        if len(frame):
            if self._writer is not None:
                self._writer.write(frame)
            else:
                self._frames.append(frame)
        for u in [t, *self._neighbours(t)]:  # free tiles nobody waits for any more
            if u in self._data and (u in self._done) and all(
                    v in self._done or v in self._dead for v in self._neighbours(u)):
                del self._data[u]


def cells_from_map(probs: NDArray[np.floating], mpp: float, *, tile_size: int = 512,
                   overlap: int = 0, config: CellConfig = CellConfig(),
                   gating: GatingTable | None = None, store: str = "float32",
                   out_dir: str | os.PathLike[str] | None = None) -> CellSummary:
    """Cells of an in-memory ``(23, H, W)`` map, fed tile by tile through :class:`CellCollector`.

    Tiles of ``tile_size`` on a grid of stride ``tile_size - overlap`` (edge tiles padded with
    zeros, i.e. no signal) with uniform weights; level 0 is the map itself (scale 1).
    """
    probs = np.asarray(probs, np.float32)
    _, h, w = probs.shape
    stride = tile_size - overlap
    cols, rows = max(1, -(-(w - overlap) // stride)), max(1, -(-(h - overlap) // stride))
    rr, cc = np.mgrid[0:rows, 0:cols]
    colrow = np.stack([cc.ravel(), rr.ravel()], 1)
    xy = colrow * stride
    col = CellCollector(config, gating, store=store)
    col.start(colrow=colrow, xy_model=xy, tile_size=tile_size, stride=stride, model_mpp=mpp,
              out_dir=out_dir)
    for t, (x, y) in enumerate(xy):
        tile = np.zeros((probs.shape[0], tile_size, tile_size), np.float32)
        part = probs[:, y : y + tile_size, x : x + tile_size]
        tile[:, : part.shape[1], : part.shape[2]] = part
        col.add(np.array([t]), tile[None])
    return col.finish()


def start_translation_cells(grid: Any, todo: NDArray[np.integer], tile_xy_model: NDArray[np.integer],
                            tile_size: int, stride: int, origins: Any, weight: NDArray[np.floating],
                            model_mpp: float, scale: float, out_dir: str | os.PathLike[str],
                            model_hash: str, config: CellConfig = CellConfig(),
                            gating: GatingTable | None = None) -> CellCollector:
    """A started :class:`CellCollector` for one slide's translation (the ``--cells`` hook).

    The tile blend weight is the sum of its windows' weights, so overlapping tiles are blended
    as the canvas blends them; uniform in the official layout (``overlap == 0``).
    """
    tile_weight = None
    if stride != tile_size or len(origins) > 1 and np.ptp(weight) > 0:
        tile_weight = WindowGeometry(weight, 1, origins, tile_size, stride).weight_sum
    col = CellCollector(config, gating)
    col.start(colrow=grid.colrow, xy_model=tile_xy_model, tile_size=tile_size, stride=stride,
              model_mpp=model_mpp, scale=scale, todo=todo, tile_weight=tile_weight,
              out_dir=out_dir, model_hash=model_hash)
    return col
