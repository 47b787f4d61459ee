"""Post-processing of the engine's logits in one fused pass: sigmoid, blend weight, pooling to the
canvas grid and per-tile statistics of the blended map.

The host path's hot pass, over a :class:`~virtime.stitch.window_geometry.WindowGeometry`: it runs
in the C++ core, multi-threaded, on numpy arrays (the device path uses the geometry's torch
backend instead). It computes each probability once and gives, as the geometry's numpy backend
would from ``w·σ(l)``,

* the pooling of every window aligned to the ``factor`` grid: ``wp = Σ_block w·σ(l)``,
  ``ws = Σ_block w``;
* the per-tile statistics of the blended tile: per tile and channel, over the
  tile's ``core x core`` region, the fraction of pixels whose blended probability
  ``Σ_k w·p_k / Σ_k w`` exceeds ``threshold`` and the mean blended probability.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from virtime.errors import InvalidArgumentError
from virtime.stitch.window_geometry import WindowGeometry

__all__ = ["PostprocessResult", "WindowPostprocessor"]


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
    *geometry, **geometry_kw
        ``weight, factor, origins, tile_size, core[, threshold]`` (positional or by name) or one
        :class:`~virtime.stitch.window_geometry.WindowGeometry` (checked there).
    threads
        CPU worker threads (0: all cores).
    """

    def __init__(self, *geometry: Any, threads: int = 0, **geometry_kw: Any) -> None:
        g = WindowGeometry.of(*geometry, **geometry_kw)
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
        return self.geometry.can_pool

    def aligned(self, x: int, y: int) -> bool:
        """Whether a window at model-pixel ``(x, y)`` lies on the canvas grid (pooled sums apply)."""
        return self.geometry.aligned(x, y)

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
