"""Where a tile's model windows sit, and the three things done with them: weights, blending and
pooling to the canvas grid — one implementation, with a numpy and a torch backend.

A tile of ``tile_size`` model pixels holds ``k`` windows at ``origins`` (``(x, y)`` inside the
tile), each weighted by the same ``(h, w)`` blend weight (:func:`virtime.stitch.windows.window_weight`).

* **Weights**: :attr:`WindowGeometry.weight_sum` is ``Σ_k w`` over the tile, accumulated in window
  order; :meth:`WindowGeometry.phase_weight` is the pooled ``Σ w`` of a window whose first pixel
  sits at grid phase ``(px, py)``.
* **Blending**: ``Σ_k w·p_k / max(Σ_k w, 1e-12)``, the windows added in order (the host's cell
  tiles, the device path's tile statistics and cell tiles).
* **Pooling**: block sums over the ``factor x factor`` model pixels of each canvas pixel, a window
  off the canvas grid zero-padded to it (zero weight), so partial blocks are exact
  (:func:`virtime.stitch.windows.pool_weighted`, the device path).

:meth:`WindowGeometry.numpy` and :meth:`WindowGeometry.torch` return the two backends; both take
*weighted* windows (``w·p``, see ``weigh``) so a caller weights once and blends and pools the same
array. The host path's hot pass (sigmoid, weight, pooling and tile statistics fused in the C++ core,
:class:`virtime.translation.postprocess.WindowPostprocessor`) is checked against these.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
from numpy.typing import NDArray

from virtime.errors import InvalidArgumentError

__all__ = ["NumpyWindows", "TorchWindows", "WindowGeometry", "pool_blocks"]

#: Floor of the blend divisor: a pixel no window covers has Σw·p = 0 and stays 0.
BLEND_EPS = np.float32(1e-12)


def _padded_extent(h: int, w: int, factor: int, px: int, py: int) -> tuple[int, int]:
    """Height and width of a window at phase ``(px, py)`` zero-padded to whole grid blocks."""
    f = int(factor)
    return -(-(py + h) // f) * f, -(-(px + w) // f) * f


def pool_blocks(values: NDArray[Any], factor: int, px: int = 0, py: int = 0) -> NDArray[Any]:
    """numpy block sums of ``values`` ``(..., h, w)`` whose first pixel is at grid phase ``(px, py)``.

    Output pixel ``(i, j)`` sums model pixels ``[i·f, (i+1)·f) x [j·f, (j+1)·f)`` of the window
    zero-padded to the grid; ``factor == 1`` returns ``values`` itself.
    """
    f = int(factor)
    if f == 1:
        return values
    *lead, h, w = values.shape
    hh, ww = _padded_extent(h, w, f, px, py)
    if (px, py, hh, ww) != (0, 0, h, w):
        padded = np.zeros((*lead, hh, ww), dtype=np.float32)
        padded[..., py : py + h, px : px + w] = values
        values = padded
    # Rows first: that sum runs over whole contiguous rows and leaves 1/f of the data for the
    # awkward short-axis sum (about 2x faster than one reduction over both axes).
    rows = values.reshape(*lead, hh // f, f, ww).sum(axis=-2)
    return rows.reshape(*lead, hh // f, ww // f, f).sum(axis=-1)


@dataclass(frozen=True, eq=False)
class WindowGeometry:
    """How a tile's windows are weighted, blended and pooled: the one check of that geometry.

    Parameters
    ----------
    weight
        ``(h, w)`` blend weight of a window (:func:`virtime.stitch.windows.window_weight`).
    factor
        Pooling factor to the canvas grid (:func:`virtime.stitch.windows.output_factor`).
    origins
        ``(x, y)`` of the ``k`` windows inside a tile, in the order the logits come in.
    tile_size
        Side of the tile in model pixels.
    core
        Side of the tile's own region (the tile stride), over which statistics are taken.
    threshold
        Positive: blended probability strictly above it.
    """

    weight: Any
    factor: int
    origins: Any
    tile_size: int
    core: int
    threshold: float = 0.5

    def __post_init__(self) -> None:
        weight = np.ascontiguousarray(self.weight, dtype=np.float32)
        if weight.ndim != 2:
            raise InvalidArgumentError(f"weight must be (h, w), got shape {weight.shape}")
        if int(self.factor) < 1:
            raise InvalidArgumentError(f"factor must be >= 1, got {self.factor}")
        origins = np.asarray(self.origins, dtype=np.int64).reshape(-1, 2)
        tile = int(self.tile_size)
        h, w = weight.shape
        if len(origins) == 0 or (origins < 0).any() or (origins[:, 0] + w > tile).any() or \
                (origins[:, 1] + h > tile).any():
            raise InvalidArgumentError(
                f"window origins {origins.tolist()} must place {h}x{w} windows inside a "
                f"{tile}-pixel tile"
            )
        if not 1 <= int(self.core) <= tile:
            raise InvalidArgumentError(f"core must be in [1, {tile}], got {self.core}")
        for name, value in (("weight", weight), ("factor", int(self.factor)),
                            ("origins", origins), ("tile_size", tile), ("core", int(self.core)),
                            ("threshold", float(self.threshold))):
            object.__setattr__(self, name, value)

    @classmethod
    def of(cls, *fields: Any, **named: Any) -> WindowGeometry:
        """One geometry given as is, or built (and checked) from its fields, positional or named:
        what the host pass and the device path accept."""
        if len(fields) == 1 and not named and isinstance(fields[0], cls):
            return fields[0]
        return cls(*fields, **named)

    # -- shape ------------------------------------------------------------------------------
    @property
    def window_shape(self) -> tuple[int, int]:
        """``(h, w)`` of a window."""
        h, w = self.weight.shape
        return int(h), int(w)

    @property
    def windows_per_tile(self) -> int:
        return len(self.origins)

    @property
    def spans_tile(self) -> bool:
        """One window that is the whole tile: its blend is its probabilities, unweighted."""
        return self.windows_per_tile == 1 and self.window_shape == (self.tile_size, self.tile_size)

    @property
    def can_pool(self) -> bool:
        """True when windows split into whole ``factor x factor`` blocks."""
        h, w = self.window_shape
        return h % self.factor == 0 and w % self.factor == 0

    def aligned(self, x: int, y: int) -> bool:
        """Whether a window at model pixel ``(x, y)`` lies on the canvas grid (no padding)."""
        return self.can_pool and x % self.factor == 0 and y % self.factor == 0

    @cached_property
    def grid_split(self) -> tuple[int, int] | None:
        """``(ny, nx)`` when the windows tile the tile exactly, row-major (a reshape splits them)."""
        t, (h, w) = self.tile_size, self.window_shape
        if t % h or t % w:
            return None
        ny, nx = t // h, t // w
        grid = [[x * w, y * h] for y in range(ny) for x in range(nx)]
        return (ny, nx) if self.origins.tolist() == grid else None

    @cached_property
    def uniform(self) -> bool:
        """All weights are one (the official layout)."""
        return bool((self.weight == 1.0).all())

    # -- weights ----------------------------------------------------------------------------
    @cached_property
    def weight_sum(self) -> NDArray[np.float32]:
        """``(T, T)`` float32 ``Σ_k w`` over the tile, the windows added in order."""
        t, (h, w) = self.tile_size, self.window_shape
        total = np.zeros((t, t), dtype=np.float32)
        for ox, oy in self.origins.tolist():
            total[oy : oy + h, ox : ox + w] += self.weight
        return total

    @cached_property
    def blend_divisor(self) -> NDArray[np.float32]:
        """``max(Σ_k w, 1e-12)``: what a blended tile is divided by."""
        return np.maximum(self.weight_sum, BLEND_EPS)

    @cached_property
    def _phase_weights(self) -> dict[tuple[int, int], NDArray[np.float32]]:
        return {}

    def phase_weight(self, px: int, py: int) -> NDArray[np.float32]:
        """Pooled ``Σ w`` ``(h', w')`` of a window at grid phase ``(px, py)`` (cached; read only)."""
        key = (int(px), int(py))
        if key not in self._phase_weights:
            pooled = pool_blocks(self.weight, self.factor, *key)
            self._phase_weights[key] = np.array(pooled, dtype=np.float32, order="C")
        return self._phase_weights[key]

    # -- backends ---------------------------------------------------------------------------
    def numpy(self) -> NumpyWindows:
        """The numpy backend (float32 arrays)."""
        return NumpyWindows(self)

    def torch(self, device: Any = "cpu") -> TorchWindows:
        """The torch backend on ``device`` (float32 tensors)."""
        return TorchWindows(self, device)


class NumpyWindows:
    """:class:`WindowGeometry`'s operations on numpy arrays."""

    def __init__(self, geometry: WindowGeometry) -> None:
        self.geometry = geometry

    def weigh(self, probs: NDArray[Any], out: NDArray[np.float32] | None = None
              ) -> NDArray[np.float32]:
        """``w·p`` of windows ``(..., h, w)``: a new float32 array, or into ``out`` (which may be
        ``probs`` itself)."""
        return np.multiply(np.asarray(probs, dtype=np.float32), self.geometry.weight, out=out)

    def blend(self, weighted: NDArray[Any], size: int | None = None) -> NDArray[np.float32]:
        """Blended tiles ``(n, C, s, s)`` from weighted windows ``(n, k, C, h, w)``.

        ``s`` (default: the tile) crops to the top-left ``s x s`` pixels (``core``: the tile's
        own region).
        """
        g = self.geometry
        s = g.tile_size if size is None else int(size)
        n, _, c, h, w = weighted.shape
        acc = np.zeros((n, c, s, s), dtype=np.float32)
        for j, (ox, oy) in enumerate(g.origins.tolist()):
            if oy < s and ox < s:
                y1, x1 = min(oy + h, s), min(ox + w, s)
                acc[:, :, oy:y1, ox:x1] += weighted[:, j, :, : y1 - oy, : x1 - ox]
        np.divide(acc, g.blend_divisor[:s, :s], out=acc)
        return acc

    def pool(self, weighted: NDArray[Any], px: int, py: int) -> NDArray[np.float32]:
        """Block sums ``(..., h', w')`` of weighted windows ``(..., h, w)`` at grid phase ``(px, py)``."""
        return pool_blocks(np.asarray(weighted, dtype=np.float32), self.geometry.factor, px, py)

    def phase_weight(self, px: int, py: int) -> NDArray[np.float32]:
        return self.geometry.phase_weight(px, py)


class TorchWindows:
    """:class:`WindowGeometry`'s operations on torch tensors on one device (in place where the
    input is a temporary of the caller's, as noted)."""

    def __init__(self, geometry: WindowGeometry, device: Any = "cpu") -> None:
        import torch

        self._torch = torch
        self.geometry = geometry
        self.device = torch.device(str(device))
        self.weight = torch.from_numpy(geometry.weight).to(self.device)
        self._divisors: dict[int, Any] = {}
        self._phase: dict[tuple[int, int], Any] = {}

    def weigh(self, probs: Any) -> Any:
        """``w·p`` of float32 windows ``(..., h, w)``, **in place**."""
        return probs.mul_(self.weight)

    def _divisor(self, s: int) -> Any:
        if s not in self._divisors:
            crop = np.ascontiguousarray(self.geometry.blend_divisor[:s, :s])
            self._divisors[s] = self._torch.from_numpy(crop).to(self.device)
        return self._divisors[s]

    def blend(self, weighted: Any, size: int | None = None) -> Any:
        """Blended tiles ``(n, C, s, s)`` from weighted windows ``(n, k, C, h, w)`` (a new tensor);
        ``size`` as :meth:`NumpyWindows.blend`."""
        g, torch = self.geometry, self._torch
        s = g.tile_size if size is None else int(size)
        n, _, c, h, w = weighted.shape
        if s == g.tile_size and g.grid_split is not None and g.uniform:
            ny, nx = g.grid_split  # uniform, non-overlapping: the blend is the windows laid out
            acc = weighted.view(n, ny, nx, c, h, w).permute(0, 3, 1, 4, 2, 5).reshape(n, c, s, s)
            return acc.clone() if acc.data_ptr() == weighted.data_ptr() else acc
        acc = torch.zeros((n, c, s, s), dtype=torch.float32, device=weighted.device)
        for j, (ox, oy) in enumerate(g.origins.tolist()):
            if oy < s and ox < s:
                y1, x1 = min(oy + h, s), min(ox + w, s)
                acc[:, :, oy:y1, ox:x1] += weighted[:, j, :, : y1 - oy, : x1 - ox]
        return acc.div_(self._divisor(s))

    def pool(self, weighted: Any, px: int, py: int) -> Any:
        """Block sums ``(..., h', w')`` of weighted windows ``(..., h, w)`` at grid phase
        ``(px, py)`` (``weighted`` itself when ``factor == 1`` on the grid)."""
        import torch.nn.functional as F

        f = self.geometry.factor
        *lead, h, w = weighted.shape
        hh, ww = _padded_extent(h, w, f, px, py)
        if (px, py, hh, ww) != (0, 0, h, w):
            weighted = F.pad(weighted, (px, ww - w - px, py, hh - h - py))
        if f > 1:
            weighted = weighted.reshape(*lead, hh // f, f, ww // f, f).sum(dim=(-3, -1))
        return weighted

    def phase_weight(self, px: int, py: int) -> Any:
        """:meth:`WindowGeometry.phase_weight` on this device."""
        key = (int(px), int(py))
        if key not in self._phase:
            host = self.geometry.phase_weight(*key)
            self._phase[key] = self._torch.from_numpy(host).to(self.device)
        return self._phase[key]
