"""Post-processing of the engine's logits in one fused pass: sigmoid, blend weight, pooling to the
canvas grid and per-tile statistics of the blended map.

The work runs in the C++ core, multi-threaded, on numpy arrays (the device path post-processes
on the GPU with torch instead). It reproduces, in one pass that computes each probability once,

* :func:`virtime.stitch.windows.pool_weighted` of every window (for windows aligned to the
  ``factor`` grid): ``wp = Σ_block w·σ(l)``, ``ws = Σ_block w``;
* the per-tile statistics of the blended tile: per tile and channel, over the
  tile's ``core x core`` region, the fraction of pixels whose blended probability
  ``Σ_k w·p_k / Σ_k w`` exceeds ``threshold`` and the mean blended probability.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from virtime.errors import InvalidArgumentError

__all__ = ["PostprocessResult", "WindowGeometry", "WindowPostprocessor"]


@dataclass(frozen=True)
class WindowGeometry:
    """How a tile's windows are blended and pooled, validated once for the host and device passes.

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


@dataclass(frozen=True)
class PostprocessResult:
    """Outputs of :meth:`WindowPostprocessor.process` (numpy arrays).

    Attributes
    ----------
    wp
        ``(n, k, C, h/f, w/f)`` float32 block sums ``Σ w·p`` of every window (``None`` when the
        window is not a multiple of ``factor``).
    ws
        ``(h/f, w/f)`` float32 block sums ``Σ w`` (the same for every window), or ``None``.
    positive_fraction, mean_probability
        ``(n, C)`` float64 statistics of each tile's blended map over its core region.
    """

    wp: Any
    ws: Any
    positive_fraction: Any
    mean_probability: Any


class WindowPostprocessor:
    """Fused post-processing of the windows of whole tiles (see the module docstring).

    Parameters
    ----------
    weight, factor, origins, tile_size, core, threshold
        The window geometry, as :class:`WindowGeometry` (validated there).
    threads
        CPU worker threads (0: all cores).
    """

    def __init__(
        self,
        weight: NDArray[Any],
        factor: int,
        origins: Sequence[tuple[int, int]],
        tile_size: int,
        core: int,
        threshold: float = 0.5,
        threads: int = 0,
    ) -> None:
        g = WindowGeometry(weight, factor, origins, tile_size, core, threshold)
        self.geometry = g
        self.weight, self.factor, self.origins = g.weight, g.factor, g.origins
        self.tile_size, self.core, self.threshold = g.tile_size, g.core, g.threshold
        self.threads = int(threads)

    @property
    def windows_per_tile(self) -> int:
        return len(self.origins)

    @property
    def can_pool(self) -> bool:
        """True when windows split into whole ``factor x factor`` blocks (else pool elsewhere)."""
        h, w = self.weight.shape
        return h % self.factor == 0 and w % self.factor == 0

    def aligned(self, x: int, y: int) -> bool:
        """Whether a window at model-pixel ``(x, y)`` lies on the canvas grid (pooled sums apply)."""
        return self.can_pool and x % self.factor == 0 and y % self.factor == 0

    # ------------------------------------------------------------------ checks
    def _check_logits(self, logits: Any) -> tuple[int, int]:
        shape = tuple(logits.shape)
        if len(shape) != 4 or shape[2:] != self.weight.shape:
            raise InvalidArgumentError(
                f"logits must be (n*k, C, {self.weight.shape[0]}, {self.weight.shape[1]}), got {shape}"
            )
        k = self.windows_per_tile
        if shape[0] % k:
            raise InvalidArgumentError(f"{shape[0]} windows are not whole tiles of {k} windows")
        return shape[0] // k, shape[1]

    # ------------------------------------------------------------------ public
    def process(self, logits: Any) -> PostprocessResult:
        """Pooled sums of every window and statistics of every tile, in one pass.

        ``logits`` is ``(n*k, C, h, w)``: the ``k`` windows of each tile in ``origins`` order.
        """
        n, c = self._check_logits(logits)
        from virtime import _core

        x = np.ascontiguousarray(np.asarray(logits), dtype=np.float32)
        k, area = self.windows_per_tile, float(self.core * self.core)
        wp: Any
        ws: Any
        if self.can_pool:
            wp, ws, pos, psum = _core.postprocess_tiles(
                x, self.weight, self.factor, self.origins, self.tile_size, self.core,
                self.threshold, self.threads)
            wp = wp.reshape(n, k, *wp.shape[1:])
        else:
            wp = ws = None
            pos, psum = _core.tile_stats(x, self.weight, self.origins, self.tile_size, self.core,
                                         self.threshold, self.threads)
        return PostprocessResult(wp, ws, pos / area, psum / area)

    def pool(self, logits: Any) -> tuple[Any, Any]:
        """Block sums ``(wp (n, C, h/f, w/f), ws (h/f, w/f))`` of any number of windows."""
        if len(tuple(logits.shape)) != 4 or tuple(logits.shape[2:]) != self.weight.shape:
            raise InvalidArgumentError(f"logits must be (n, C, h, w) like the weight, got {logits.shape}")
        if not self.can_pool:
            raise InvalidArgumentError(
                f"windows {self.weight.shape} are not multiples of the factor {self.factor}"
            )
        from virtime import _core

        x = np.ascontiguousarray(np.asarray(logits), dtype=np.float32)
        return _core.sigmoid_pool_windows(x, self.weight, self.factor, self.threads)
