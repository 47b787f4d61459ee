"""What a translation derives from its canvas bands as they are written: thumbnail and features.

:func:`attach_band_outputs` hangs two observers on a :class:`~virtime.translation.run.SlideRun`'s
canvas before its tile loop starts (the pyramid is the canvas's own): a
:class:`~virtime.stitch.observers.LevelTap` that keeps the thumbnail's channels of the thumbnail's
pyramid level, and :class:`~virtime.features.bands.BandFeatures` fed with each band's tissue.
:meth:`SlideRun.finish` then renders the thumbnail and writes the features without reading the
map back (it falls back to the stored map only when the final tissue mask is not the one the
bands were given, see :class:`BandTissue`).

The tissue of a band is the tissue mask on the canvas grid minus what failed tiles left without
a prediction (:func:`failed_tissue`); :class:`BandTissue` follows the run's tile rows as the loop
appends them, so when a band is flushed it knows every failure that reaches it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["BandOutputs", "BandTissue", "attach_band_outputs", "failed_tissue", "mask_on_canvas"]


def mask_on_canvas(mask: NDArray[Any], shape_yx: tuple[int, int]) -> NDArray[Any]:
    """Nearest-neighbour resampling of the tissue mask onto the canvas grid."""
    h, w = shape_yx
    rows = np.minimum((np.arange(h) * mask.shape[0]) // max(h, 1), mask.shape[0] - 1)
    cols = np.minimum((np.arange(w) * mask.shape[1]) // max(w, 1), mask.shape[1] - 1)
    return mask[rows][:, cols].astype(bool)


def failed_tissue(failed_xy: NDArray[Any], done_xy: NDArray[Any], *, scale: float, reach: float,
                  factor: int, tile_size: int, shape_yx: tuple[int, int],
                  rows: tuple[int, int] | None = None) -> NDArray[np.bool_]:
    """Canvas pixels that failed tiles cover and no finished tile does, in canvas ``rows``.

    ``failed_xy`` / ``done_xy``: ``(n, 2)`` level-0 origins of the failed and finished tiles;
    ``scale`` model pixels per level-0 pixel; ``reach`` a tile's level-0 extent (finished tiles
    farther than that from every failed one cannot share pixels with it); a tile covers
    ``tile_size`` model pixels from ``rint(origin · scale)``, a canvas pixel ``factor`` model
    pixels. With overlap a neighbour still predicts the shared margin, so only what no finished
    tile reaches is failed.
    """
    h, w = shape_yx
    a, b = (0, h) if rows is None else (max(0, rows[0]), min(h, rows[1]))
    out = np.zeros((max(0, b - a), w), dtype=bool)
    failed_xy = np.asarray(failed_xy, dtype=np.float64).reshape(-1, 2)
    if not len(failed_xy) or b <= a:
        return out
    done_xy = np.asarray(done_xy, dtype=np.float64).reshape(-1, 2)
    f = int(factor)

    def rect(x0: float, y0: float) -> tuple[int, int, int, int]:
        tx, ty = int(np.rint(x0 * scale)), int(np.rint(y0 * scale))
        return (max(a, ty // f) - a, min(b, -(-(ty + tile_size) // f)) - a,
                max(0, tx // f), min(w, -(-(tx + tile_size) // f)))

    near = np.zeros(len(done_xy), dtype=bool)  # finished tiles that may share pixels with a failed one
    for x, y in failed_xy:
        r0, r1, c0, c1 = rect(x, y)
        if r0 < r1 and c0 < c1:
            out[r0:r1, c0:c1] = True
            near |= (np.abs(done_xy[:, 0] - x) < reach) & (np.abs(done_xy[:, 1] - y) < reach)
    for x, y in done_xy[near]:
        q0, q1, p0, p1 = rect(x, y)
        if q0 < q1 and p0 < p1:
            out[q0:q1, p0:p1] = False
    return out


class BandTissue:
    """The tissue of canvas rows as the tile loop stands now: the mask minus failed tissue.

    ``rows`` is the run's list of tile rows (finished tiles, and failed ones marked by
    ``failure_column``); it is only appended to, so it is read incrementally. A tile that
    failed and later succeeded (a resumed run) counts as finished.
    """

    def __init__(self, mask: NDArray[np.bool_], rows: list[dict[str, Any]], failure_column: str,
                 *, scale: float, reach: float, factor: int, tile_size: int) -> None:
        self.mask = mask
        self._rows = rows
        self._column = failure_column
        self._seen = 0
        self._failed: dict[int, tuple[float, float]] = {}
        self._done: dict[int, tuple[float, float]] = {}
        self._geometry = {"scale": scale, "reach": reach, "factor": factor,
                          "tile_size": tile_size, "shape_yx": tuple(mask.shape)}

    def _catch_up(self) -> None:
        rows = self._rows
        for r in rows[self._seen :]:
            tile, xy = int(r["tile"]), (float(r["x"]), float(r["y"]))
            reason = r.get(self._column)
            if isinstance(reason, str):  # a failure row (a journal gives others None or NaN)
                if tile not in self._done:
                    self._failed[tile] = xy
            else:
                self._done[tile] = xy
                self._failed.pop(tile, None)
        self._seen = len(rows)

    def __call__(self, y0: int, y1: int) -> NDArray[np.bool_]:
        self._catch_up()
        band = self.mask[y0:y1]
        if not self._failed:
            return band.copy()
        failed = np.array(list(self._failed.values()), dtype=np.float64)
        done = np.array(list(self._done.values()), dtype=np.float64).reshape(-1, 2)
        return band & ~failed_tissue(failed, done, rows=(y0, y1), **self._geometry)


@dataclass
class BandOutputs:
    """The observers :func:`attach_band_outputs` attached (None where not wanted)."""

    mask: NDArray[np.bool_]  # the tissue mask on the canvas grid (before failed tiles)
    thumbnail: Any = None  # LevelTap of the thumbnail's level and channels
    features: Any = None  # BandFeatures
    page: dict[str, tuple[Any, tuple[str, ...]]] | None = None  # the slide page's LevelTaps

    def page_data(self, tiles: Any, features: Any = None) -> Any:
        """The slide page's inputs (:class:`virtime.view.page.PageData`) from the page's level
        taps and the tables just written; None when a tap missed bands (a resumed run), so the
        page reads the stored map instead."""
        from virtime.view.page import MifLevel, PageData

        if self.page is None or not all(tap.complete for tap, _ in self.page.values()):
            return None
        top, grid = (MifLevel(tap.image, names) for tap, names in
                     (self.page["top"], self.page["grid"]))
        return PageData(top, grid, tiles, features)


def attach_band_outputs(canvas: Any, tissue_mask: NDArray[Any], rows: list[dict[str, Any]],
                        config: Any, *, grid: Any, failure_column: str) -> BandOutputs:
    """Attach the thumbnail and feature observers to ``canvas`` (before its first band)."""
    from virtime.channels import channel_index
    from virtime.features.bands import BandFeatures
    from virtime.stitch import omezarr
    from virtime.stitch.observers import LevelTap
    from virtime.stitch.thumbnail import thumbnail_level

    mask = mask_on_canvas(tissue_mask, canvas.shape_yx)
    shapes = omezarr.pyramid_shapes(canvas.shape_yx, canvas.n_levels)
    level = thumbnail_level(shapes)
    names = [c.name for c in canvas.channels]
    index = [names.index(c) if c in names else channel_index(c)
             for c in config.thumbnail_channels]
    tap = LevelTap(level, shapes[level], index)
    canvas.add_level_listener(tap)
    page = _attach_page_taps(canvas, shapes, names)
    features = None
    if config.features:
        tissue = BandTissue(mask, rows, failure_column,
                            scale=grid.tile_size / grid.tile_size_level0,
                            reach=grid.tile_size_level0, factor=canvas.factor,
                            tile_size=config.tile_size)
        features = BandFeatures(canvas.mpp, names, tissue, bin_um=config.bin_um,
                                threshold=config.threshold)
        canvas.attach(features)
    return BandOutputs(mask, tap, features, page)


def _attach_page_taps(canvas: Any, shapes: list[tuple[int, int]],
                      names: list[str]) -> dict[str, tuple[Any, tuple[str, ...]]] | None:
    """Level taps of what the slide page shows (:func:`virtime.view.page.page_levels`); None
    when the map lacks one of its channels (the page then reads the map and says so)."""
    from virtime.stitch.observers import LevelTap
    from virtime.view.page import page_levels

    wanted = page_levels(shapes)
    if any(c not in names for _, channels in wanted.values() for c in channels):
        return None
    taps = {}
    for key, (level, channels) in wanted.items():
        tap = LevelTap(level, shapes[level], [names.index(c) for c in channels])
        canvas.add_level_listener(tap)
        taps[key] = (tap, channels)
    return taps
