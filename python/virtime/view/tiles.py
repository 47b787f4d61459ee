"""On-demand deep-zoom tiles of a translated slide: H&E, virtual mIF channels, tissue outline.

The viewer shows one display pyramid for everything, in level-0 pixels of the H&E slide: zoom
``z`` runs from 0 (the whole slide in one ``tile x tile`` tile) to ``max_zoom`` (level 0, one
screen pixel per slide pixel); at zoom ``z`` a tile covers ``tile · 2**(max_zoom - z)`` level-0
pixels a side (the *downsample* ``d``). Edge tiles are cut to the slide.

* H&E: read through :class:`virtime.slide.Slide` at the coarsest slide level whose downsample is
  ``<= d`` (never upsampled from a coarser one) and resized (bilinear) to the tile; JPEG.
* Virtual mIF: one channel of the OME-Zarr pyramid, from the coarsest level whose pixel is
  ``<= d`` level-0 pixels, sampled at the tile's pixel centres (nearest neighbour, so a
  zoomed-in tile shows the canvas pixels as blocks, never invented detail); grey PNG, the uint8
  probability x 255 as stored. The page colours and composites the channels itself.
* Tissue outline: the boundary of ``tissue_mask.npy`` (on the canvas grid, memory-mapped),
  sampled like a channel; a transparent PNG with the outline opaque.

Encoded tiles are kept in a byte-bounded LRU cache shared by the server's threads.
"""

from __future__ import annotations

import io
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from virtime.channels import get_channel
from virtime.errors import InputDataError, InvalidArgumentError
from virtime.io import SlideFolder

__all__ = ["TILE", "LRUCache", "ViewSource", "check_output_dir"]

TILE = 256


def check_output_dir(slide_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``summary.json`` of a finished slide folder; :class:`InputDataError` otherwise.

    A folder is viewable once ``virtime translate`` wrote its summary with ``status: done``
    (written last, so everything else is complete).
    """
    folder = SlideFolder(slide_dir)
    summary = folder.require_done()
    if not (folder.zarr / ".zgroup").is_file():
        raise InputDataError(f"{folder.path}: no virtual mIF ({folder.ZARR} missing)")
    return summary


class LRUCache:
    """Thread-safe least-recently-used cache of ``bytes`` with a total-size budget."""

    def __init__(self, max_bytes: int = 256 * 2**20) -> None:
        self.max_bytes = int(max_bytes)
        self._data: OrderedDict[Any, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get_or_make(self, key: Any, make: Callable[[], bytes]) -> bytes:
        """The cached value of ``key``, made (outside the lock) and stored on a miss."""
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                self.hits += 1
                return self._data[key]
            self.misses += 1
        value = make()
        with self._lock:
            if key not in self._data:
                self._data[key] = value
                self._bytes += len(value)
                while self._bytes > self.max_bytes and len(self._data) > 1:
                    _, old = self._data.popitem(last=False)
                    self._bytes -= len(old)
        return value

    def __len__(self) -> int:
        return len(self._data)


@dataclass(frozen=True)
class _Level:
    index: int
    array: Any
    px: float  # level-0 slide pixels per pixel of this level


def _encode(img: NDArray[np.uint8], fmt: str, quality: int = 85) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    pil = Image.fromarray(np.ascontiguousarray(img))
    if fmt == "JPEG":
        pil.save(buf, format="JPEG", quality=quality)
    else:
        pil.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


class ViewSource:
    """Everything the viewer reads from one finished slide folder ``OUT/SLIDE_ID``.

    Opening is cheap whatever the slide size: the slide and the Zarr are opened, not read; the
    tissue mask is memory-mapped; only the tile table is loaded.

    Parameters
    ----------
    slide_dir
        A folder written by ``virtime translate`` (``summary.json`` with ``status: done``).
    slide_path
        The H&E slide, if it moved since translation (default: the one the summary records,
        :meth:`SlideFolder.recorded_slide`).
    mpp
        Level-0 microns per pixel for a slide without metadata (default: the summary's).
    cache_bytes
        Budget of the encoded-tile cache.
    """

    def __init__(self, slide_dir: str | os.PathLike[str], *, slide_path: str | None = None,
                 mpp: float | None = None, cache_bytes: int = 256 * 2**20) -> None:
        from virtime.slide import Slide
        from virtime.io.omezarr import VerifiedArray, read_ome_zarr

        self.dir = Path(slide_dir)
        folder = SlideFolder(self.dir)
        self.summary = check_output_dir(self.dir)
        self.slide_id = str(self.summary.get("slide_id", self.dir.name))
        path = slide_path or SlideFolder.recorded_slide(self.summary)
        if not path or not Path(path).is_file():
            raise InputDataError(f"{self.dir}: the H&E slide {str(path)!r} is not there any more; "
                                 "pass its new path with --slide")
        mpp = mpp or self.summary.get("slide_mpp")
        self.slide = Slide(path, mpp=mpp)
        self.width, self.height = self.slide.dimensions
        self.mpp = float(self.slide.mpp)
        image = read_ome_zarr(folder.zarr, verify=False)  # opening only: cheap at any size
        if image.mpp is None:
            raise InputDataError(f"{folder.zarr}: no pixel size in the multiscales metadata")
        self.channel_names = list(image.channels)
        self.canvas_mpp = out_mpp = image.mpp
        self._zarr_factor = _zarr_factor(image.virtime)
        f = out_mpp / self.mpp  # level-0 pixels per canvas pixel
        # Reads check that the chunks they touch exist and decode (a lost chunk would read as
        # zeros): a damaged map gives an error tile naming the chunk, not a silent hole.
        self.levels = [_Level(k, VerifiedArray(arr, check_present=True), f * 2**k)
                       for k, arr in enumerate(image.levels)]
        self.canvas_shape = tuple(int(v) for v in self.levels[0].array.shape[1:])
        self.max_zoom = max(0, math.ceil(math.log2(max(self.width, self.height) / TILE)))
        self.mask = folder.read_tissue_mask()
        self._tiles = self._load_tiles()
        self.cache = LRUCache(cache_bytes)
        self._slide_ds = [float(v) for v in self.slide.level_downsamples]

    # -- geometry ------------------------------------------------------------------------------
    def downsample(self, z: int) -> int:
        """Level-0 pixels per tile pixel at zoom ``z``."""
        if not 0 <= z <= self.max_zoom:
            raise InvalidArgumentError(f"zoom {z} outside 0..{self.max_zoom}")
        return 2 ** (self.max_zoom - z)

    def tile_box(self, z: int, tx: int, ty: int) -> tuple[int, int, int, int, int]:
        """``(x0, y0, w, h, d)``: level-0 origin, tile size in pixels and the downsample."""
        d = self.downsample(z)
        span = TILE * d
        x0, y0 = tx * span, ty * span
        if tx < 0 or ty < 0 or x0 >= self.width or y0 >= self.height:
            raise InvalidArgumentError(f"tile {z}/{tx}/{ty} is outside the slide")
        w = min(TILE, -(-(self.width - x0) // d))
        h = min(TILE, -(-(self.height - y0) // d))
        return x0, y0, w, h, d

    def info(self) -> dict[str, Any]:
        """What the page needs to set itself up (sizes, scales, channels, defaults)."""
        cfg = self.summary.get("config", {})
        defaults = [c for c in cfg.get("thumbnail_channels", ["DAPI", "CD8", "CK"])
                    if c in self.channel_names]
        return {
            "slide_id": self.slide_id,
            "width": self.width, "height": self.height, "mpp": self.mpp,
            "tile": TILE, "max_zoom": self.max_zoom,
            "canvas": {"width": self.canvas_shape[1], "height": self.canvas_shape[0],
                       "mpp": self.canvas_mpp},
            "channels": [{"index": i, "name": n, "color": _color(n),
                          "role": _role(n)} for i, n in enumerate(self.channel_names)],
            "default_channels": defaults,
            "has_mask": self.mask is not None,
            "tiles": int(len(self._tiles["x"])) if self._tiles else 0,
        }

    # -- tiles ---------------------------------------------------------------------------------
    def he_tile(self, z: int, tx: int, ty: int) -> bytes:
        """JPEG of the H&E tile ``z/tx/ty``."""
        return self.cache.get_or_make(("he", z, tx, ty), lambda: _encode(
            self.he_array(z, tx, ty), "JPEG"))

    def he_array(self, z: int, tx: int, ty: int) -> NDArray[np.uint8]:
        """The H&E tile as ``(h, w, 3)`` uint8 (see the module docstring)."""
        from PIL import Image

        from virtime.stitch.thumbnail import STRIP_BYTES

        x0, y0, w, h, d = self.tile_box(z, tx, ty)
        level = max((i for i, ds in enumerate(self._slide_ds) if ds <= d * 1.001), default=0)
        ds = self._slide_ds[level]
        rw, rh = max(1, round(w * d / ds)), max(1, round(h * d / ds))
        if rw * rh * 3 > STRIP_BYTES:  # a coarse view without a fitting level (a flat TIFF)
            return self._he_in_blocks(x0, y0, level, (rh, rw), (h, w))
        rgb = self.slide.read_region(x0, y0, level, rw, rh)
        if (rw, rh) == (w, h):
            return rgb
        return np.asarray(Image.fromarray(rgb).resize((w, h), Image.Resampling.BILINEAR))

    def _he_in_blocks(self, x0: int, y0: int, level: int, region_yx: tuple[int, int],
                      tile_yx: tuple[int, int]) -> NDArray[np.uint8]:
        """The region area-averaged to the tile, read in blocks of bounded size: a zoomed-out
        tile of a single-level slide would otherwise read a region as large as the slide."""
        from virtime.stitch.thumbnail import downsample_blocks, level_tile_shape

        ds = self._slide_ds[level]

        def read(x: int, y: int, m: int, n: int) -> NDArray[np.uint8]:
            return self.slide.read_region(x0 + round(x * ds), y0 + round(y * ds), level, m, n)

        return downsample_blocks(read, region_yx, tile_yx,
                                 tile=level_tile_shape(self.slide, level))

    def _sample_index(self, z: int, tx: int, ty: int, level_px: list[float]
                      ) -> tuple[int, NDArray[np.int64], NDArray[np.int64]]:
        """Pyramid level and the (rows, cols) it is sampled at for tile ``z/tx/ty``."""
        x0, y0, w, h, d = self.tile_box(z, tx, ty)
        k = max((i for i, px in enumerate(level_px) if px <= d * 1.001), default=0)
        px = level_px[k]
        cols = np.floor((x0 + (np.arange(w) + 0.5) * d) / px).astype(np.int64)
        rows = np.floor((y0 + (np.arange(h) + 0.5) * d) / px).astype(np.int64)
        return k, rows, cols

    def mif_array(self, channel: int, z: int, tx: int, ty: int) -> NDArray[np.uint8]:
        """Channel ``channel`` on tile ``z/tx/ty``: ``(h, w)`` uint8 (0 beyond the canvas)."""
        if not 0 <= channel < len(self.channel_names):
            raise InvalidArgumentError(f"channel {channel} outside 0..{len(self.channel_names) - 1}")
        k, rows, cols = self._sample_index(z, tx, ty, [lv.px for lv in self.levels])
        arr = self.levels[k].array
        hk, wk = arr.shape[1:]
        out = np.zeros((len(rows), len(cols)), np.uint8)
        rin, cin = rows < hk, cols < wk
        if rin.any() and cin.any():
            r, c = rows[rin], cols[cin]
            block = np.asarray(arr[channel, r[0]:r[-1] + 1, c[0]:c[-1] + 1])
            out[np.ix_(rin, cin)] = block[np.ix_(r - r[0], c - c[0])]
        return out

    def mif_tile(self, channel: int, z: int, tx: int, ty: int) -> bytes:
        """Grey PNG of one channel on tile ``z/tx/ty``."""
        return self.cache.get_or_make(("mif", channel, z, tx, ty), lambda: _encode(
            self.mif_array(channel, z, tx, ty), "PNG"))

    def mask_array(self, z: int, tx: int, ty: int) -> NDArray[np.uint8]:
        """``(h, w, 4)`` RGBA: the tissue outline (yellow, opaque) on a transparent tile."""
        x0, y0, w, h, d = self.tile_box(z, tx, ty)
        out = np.zeros((h, w, 4), np.uint8)
        if self.mask is None:
            return out
        mh, mw = self.mask.shape
        px = self.levels[0].px * self.canvas_shape[0] / mh  # mask stored on the canvas grid
        # sample one pixel beyond each side so the outline is continuous across tiles
        cols = np.floor((x0 + (np.arange(-1, w + 1) + 0.5) * d) / px).astype(np.int64)
        rows = np.floor((y0 + (np.arange(-1, h + 1) + 0.5) * d) / px).astype(np.int64)
        ok_r, ok_c = (rows >= 0) & (rows < mh), (cols >= 0) & (cols < mw)
        m = np.zeros((len(rows), len(cols)), bool)
        if ok_r.any() and ok_c.any():
            r, c = rows[ok_r], cols[ok_c]
            block = np.asarray(self.mask[r.min():r.max() + 1, c.min():c.max() + 1]) != 0
            m[np.ix_(ok_r, ok_c)] = block[np.ix_(r - r.min(), c - c.min())]
        inner = m[1:-1, 1:-1]
        edge = inner & ~(m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:])
        out[edge] = (255, 215, 0, 255)
        return out

    def mask_tile(self, z: int, tx: int, ty: int) -> bytes:
        """Transparent PNG with the tissue outline of tile ``z/tx/ty``."""
        return self.cache.get_or_make(("mask", z, tx, ty), lambda: _encode(
            self.mask_array(z, tx, ty), "PNG"))

    # -- hover ---------------------------------------------------------------------------------
    def _load_tiles(self) -> dict[str, NDArray[Any]] | None:
        import pyarrow.parquet as pq

        path = SlideFolder(self.dir).tiles
        if not path.is_file():
            return None
        table = pq.read_table(path)
        if table.num_rows == 0 or "x" not in table.column_names:
            return None
        cols = {name: table.column(name).to_numpy() for name in table.column_names}
        cfg = self.summary.get("config", {})
        out_mpp = float(self.summary.get("output_mpp", self.canvas_mpp))
        factor = self._zarr_factor
        model_mpp = out_mpp / factor if factor else float(cfg.get("model_mpp") or self.mpp)
        cols["_extent"] = np.array([int(cfg.get("tile_size", 512)) * model_mpp / self.mpp])
        return cols

    def at(self, x: float, y: float, channels: list[int] | None = None) -> dict[str, Any]:
        """What lies at level-0 ``(x, y)``: canvas values of ``channels`` and the tile's stats.

        The tile is the one containing the point whose centre is nearest (tiles overlap when
        translated with ``--overlap``); ``None`` outside every tile.
        """
        res: dict[str, Any] = {"x": float(x), "y": float(y), "um": [x * self.mpp, y * self.mpp],
                               "values": {}, "tile": None}
        lv = self.levels[0]
        i, j = int(y // lv.px), int(x // lv.px)
        if 0 <= i < self.canvas_shape[0] and 0 <= j < self.canvas_shape[1]:
            for c in channels or []:
                if 0 <= c < len(self.channel_names):
                    res["values"][self.channel_names[c]] = int(lv.array[c, i, j])
        t = self._tiles
        if t is None:
            return res
        ext = float(t["_extent"][0])
        inside = (t["x"] <= x) & (x < t["x"] + ext) & (t["y"] <= y) & (y < t["y"] + ext)
        hit = np.flatnonzero(inside)
        if len(hit) == 0:
            return res
        dist = (t["x"][hit] + ext / 2 - x) ** 2 + (t["y"][hit] + ext / 2 - y) ** 2
        k = int(hit[np.argmin(dist)])
        row: dict[str, Any] = {"tile": int(t["tile"][k]) if "tile" in t else k,
                               "x": int(t["x"][k]), "y": int(t["y"][k]), "size": ext}
        if "tissue_fraction" in t:
            row["tissue_fraction"] = float(t["tissue_fraction"][k])
        stats = {}
        for name in self.channel_names:
            pf, mp = t.get(f"{name}.positive_fraction"), t.get(f"{name}.mean_probability")
            if pf is not None and mp is not None:
                stats[name] = [float(pf[k]), float(mp[k])]
        row["channels"] = stats
        res["tile"] = row
        return res

    def close(self) -> None:
        """Release the slide handle."""
        close = getattr(self.slide, "close", None)
        if close is not None:
            close()


def _zarr_factor(virtime_attrs: dict[str, Any]) -> float | None:
    """Canvas pixels per model pixel, as the stitcher recorded it (None when absent)."""
    try:
        return float(virtime_attrs.get("factor")) or None
    except (ValueError, TypeError):
        return None


def _color(name: str) -> str:
    try:
        return get_channel(name).color
    except KeyError:
        return "#FFFFFF"


def _role(name: str) -> str:
    try:
        return get_channel(name).role
    except KeyError:
        return "protein"

