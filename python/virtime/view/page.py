"""The static per-slide page ``OUT/SLIDE_ID/index.html`` and the thumbnails galleries reuse.

The page needs no server and no network: every image is a ``data:image/jpeg`` URI, the styles
are inline and there is no script. It shows the H&E thumbnail, the composite virtual mIF (on
black, and over the H&E), a grid of the 21 protein channels with their colour bars, a summary of
the tile table and the slide's features.

Compositing (:func:`composite_rgb`, the same formulas as the viewer's page): with ``v_c`` the
probability (uint8 / 255) times the opacity ``o`` and ``col_c`` the registry colour, channels in
registry order,

    over an image:  out = out · (1 − v_c) + v_c · col_c
    on black:       out = 255 − (255 − out) · (1 − v_c · col_c / 255)     (screen blend)
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from virtime.channels import BACKGROUND_CHANNELS, CHANNEL_NAMES, PROTEIN_CHANNELS, get_channel
from virtime.errors import InputDataError, InvalidArgumentError
from virtime.io import SlideFolder

__all__ = ["COMPOSITE_CHANNELS", "GRID_CHANNELS", "MifLevel", "PageData", "composite_rgb",
           "page_levels", "slide_panels", "write_slide_page"]

#: Channels of the composite image: nuclei, epithelium and the main immune lineages.
COMPOSITE_CHANNELS: tuple[str, ...] = ("DAPI", "CK", "CD3", "CD8", "CD20", "CD68")
#: Channels the page's grid reads: DAPI (its composite) and each protein.
GRID_CHANNELS: tuple[str, ...] = tuple(dict.fromkeys(("DAPI", *PROTEIN_CHANNELS)))
PAGE_NAME = SlideFolder.PAGE
TOP_PX = 512  # longer side of the top images
GRID_PX = 192  # longer side of each channel in the grid


@dataclass(frozen=True)
class MifLevel:
    """Channels of one pyramid level held in memory: ``image[i]`` is channel ``names[i]``, as
    reading those channels of that level from the OME-Zarr map gives them (a translation keeps
    them with :class:`~virtime.stitch.observers.LevelTap` as its bands are written)."""

    image: NDArray[np.uint8]
    names: tuple[str, ...]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.image.shape)

    def __getitem__(self, i: int) -> NDArray[np.uint8]:
        return self.image[i]


@dataclass(frozen=True)
class PageData:
    """What the page shows, already in memory, so a finishing translation reads nothing back.

    ``top`` and ``grid`` are the map levels :func:`page_levels` names, with their channels;
    ``tiles`` the tile table; ``features`` the features table, or None to read it from the
    folder (a translation with ``--no-features`` leaves whatever is there).
    """

    top: MifLevel
    grid: MifLevel
    tiles: Any
    features: Any = None


def _level_at_most(shapes_yx: Sequence[tuple[int, int]], max_px: int) -> int:
    """Index of the finest level whose longer side is ``<= max_px`` (else the coarsest)."""
    return next((k for k, s in enumerate(shapes_yx) if max(s) <= max_px), len(shapes_yx) - 1)


def page_levels(shapes_yx: Sequence[tuple[int, int]], *, max_px: int = TOP_PX,
                grid_px: int = GRID_PX) -> dict[str, tuple[int, tuple[str, ...]]]:
    """``{"top": (level, channels), "grid": (level, channels)}``: the pyramid levels (of a map
    whose levels have ``shapes_yx``) and the channels the page shows from each."""
    return {"top": (_level_at_most(shapes_yx, max_px), COMPOSITE_CHANNELS),
            "grid": (_level_at_most(shapes_yx, grid_px), GRID_CHANNELS)}


def _rgb(color: str) -> NDArray[np.float64]:
    v = int(color.lstrip("#"), 16)
    return np.array([(v >> 16) & 255, (v >> 8) & 255, v & 255], np.float64)


def composite_rgb(probs: NDArray[np.uint8], channels: Sequence[str],
                  background: NDArray[np.uint8] | None = None, opacity: float = 0.8
                  ) -> NDArray[np.uint8]:
    """Composite ``(k, h, w)`` uint8 probabilities of ``channels`` into ``(h, w, 3)`` uint8.

    Over ``background`` (an ``(h, w, 3)`` image, e.g. the H&E) each channel is laid on with
    alpha ``opacity · p``; without one, channels are screen-blended on black (fluorescence look).
    """
    probs = np.asarray(probs)
    if probs.ndim != 3 or probs.shape[0] != len(channels):
        raise InvalidArgumentError(f"probs {probs.shape} do not match {len(channels)} channels")
    h, w = probs.shape[1:]
    if background is None:
        out = np.zeros((h, w, 3), np.float64)
    else:
        background = np.asarray(background)
        if background.shape != (h, w, 3):
            raise InvalidArgumentError(f"background {background.shape} is not {(h, w, 3)}")
        out = background.astype(np.float64)
    for p, name in zip(probs, channels):
        t = (opacity * p.astype(np.float64) / 255.0)[..., None]
        col = _rgb(get_channel(name).color)
        if background is None:
            out = 255.0 - (255.0 - out) * (1.0 - t * col / 255.0)
        else:
            out = out * (1.0 - t) + t * col
    return np.floor(np.clip(out, 0, 255) + 0.5).astype(np.uint8)


def _resize(img: NDArray[np.uint8], size_wh: tuple[int, int]) -> NDArray[np.uint8]:
    from PIL import Image

    if img.shape[1::-1] == tuple(size_wh):
        return img
    return np.asarray(Image.fromarray(np.ascontiguousarray(img)).resize(
        size_wh, Image.Resampling.BOX if img.shape[1] > size_wh[0] else Image.Resampling.NEAREST))


def _jpeg(img: NDArray[np.uint8], quality: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(img)).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _uri(jpeg: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


def _read_summary(d: Path) -> dict[str, Any]:
    """The summary when there is one (the page is written before it, during translation)."""
    try:
        return SlideFolder(d).summary()
    except InputDataError:
        return {}


def _open_slide(d: Path, slide: Any) -> Any:
    if slide is not None:
        return slide
    from virtime.slide import Slide

    summary = _read_summary(d)
    path = SlideFolder.recorded_slide(summary)
    if path is None or not path.is_file():
        raise InputDataError(f"{d}: the H&E slide {None if path is None else str(path)!r} is not "
                             f"there (summary.json 'slide')")
    return Slide(path, mpp=summary.get("slide_mpp"))


def _mif_level(d: Path, max_px: int) -> tuple[Any, list[str]]:
    """The finest pyramid level whose longer side is ``<= max_px`` (else the coarsest); its
    reads check that the chunks they touch are there and decode (a lost one would be zeros)."""
    from virtime.io.omezarr import VerifiedArray, read_ome_zarr

    image = read_ome_zarr(SlideFolder(d).zarr, verify=False)
    names = list(image.channels)
    level = image.levels[_level_at_most([lv.shape[1:] for lv in image.levels], max_px)]
    return VerifiedArray(level, check_present=True), names


def _he_image(slide: Any, size_wh: tuple[int, int]) -> NDArray[np.uint8]:
    """The H&E area-averaged to ``size_wh`` from the coarsest level still at least that large.

    Read in strips (:func:`virtime.stitch.thumbnail.slide_he_reader`): on a single-level slide
    that level is level 0, and reading it in one call would need memory in proportion to the
    slide's pixel count.
    """
    from virtime.stitch.thumbnail import slide_he_reader

    dims = slide.level_dimensions
    level = max((i for i, (w, h) in enumerate(dims) if w >= size_wh[0] and h >= size_wh[1]),
                default=0)
    return slide_he_reader(slide, level)((size_wh[1], size_wh[0]))


def _panel_size(level: Any, max_px: int) -> tuple[int, int]:
    """``(w, h)`` of the panels made from mIF ``level``: its shape scaled to ``max_px``."""
    c, h, w = level.shape
    scale = min(1.0, max_px / max(h, w))
    return max(1, round(w * scale)), max(1, round(h * scale))


def slide_panels(slide_dir: str | os.PathLike[str], channels: Sequence[str] = (), *,
                 max_px: int = 256, quality: int = 80, slide: Any = None,
                 probs: NDArray[np.uint8] | None = None,
                 composite_channels: Sequence[str] = COMPOSITE_CHANNELS,
                 he: NDArray[np.uint8] | None = None,
                 level: MifLevel | None = None) -> dict[str, bytes]:
    """JPEG thumbnails of one slide: ``"H&E"``, ``"composite"``, ``"overlay"`` and ``channels``.

    Parameters
    ----------
    slide_dir
        The slide's output folder (its ``mif.ome.zarr`` and, unless ``slide`` is given, the
        slide named in ``summary.json``).
    channels
        Channels shown one by one (each its colour on black, probability as brightness).
    max_px
        Longer side of the thumbnails (the pyramid level at or below it is read, not level 0).
    slide
        An open :class:`virtime.slide.Slide` (during translation, before the summary exists).
    probs
        ``(23, h, w)`` uint8 maps to show instead of the virtual mIF (e.g. the ground truth of
        a simulated slide); resampled to the same thumbnail size.
    composite_channels
        Channels of the composite (``"composite"`` on black, ``"overlay"`` over the H&E).
    he
        The slide's H&E as ``(h, w, 3)`` uint8 at any size at least the thumbnails' (resized
        to them), e.g. what an earlier step already read; otherwise read from the slide in
        strips.
    level
        The pyramid level at or below ``max_px`` with (at least) the channels shown, already in
        memory; otherwise read from ``mif.ome.zarr``.
    """
    d = Path(slide_dir)
    if level is not None and probs is not None:
        raise InvalidArgumentError("slide_panels: pass the map level or probs, not both")
    if level is None:
        level_read, names = _mif_level(d, max_px)
    else:
        level_read, names = level, list(level.names)
    size = _panel_size(level_read, max_px)
    wanted = list(dict.fromkeys([*composite_channels, *channels]))
    missing = [n for n in wanted if n not in names]
    if missing:
        raise InputDataError(f"{d}: channels {missing} not in the virtual mIF")
    if probs is not None:
        probs = np.asarray(probs)
        if probs.ndim != 3 or probs.shape[0] != len(names):
            raise InvalidArgumentError(f"probs must be ({len(names)}, h, w), got {probs.shape}")
    maps: dict[str, NDArray[np.uint8]] = {}
    for n in wanted:
        src = (probs[names.index(n)] if probs is not None
               else np.asarray(level_read[names.index(n)]))
        maps[n] = _resize(src, size)
    he = _he_image(_open_slide(d, slide), size) if he is None else _resize(np.asarray(he), size)
    comp = [maps[n] for n in composite_channels]
    out = {"H&E": _jpeg(he, quality),
           "composite": _jpeg(composite_rgb(np.stack(comp), composite_channels), quality),
           "overlay": _jpeg(composite_rgb(np.stack(comp), composite_channels, he), quality)}
    for n in channels:
        out[n] = _jpeg(composite_rgb(maps[n][None], [n], opacity=1.0), quality)
    return out


_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:1.5em auto;max-width:1200px;
color:#222;padding:0 1em;line-height:1.4}h1{font-size:1.5em;border-bottom:2px solid #444}
h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ccc}.meta{color:#666;font-size:.85em}
.top{display:flex;flex-wrap:wrap;gap:12px}.top figure{margin:0}.top img{max-width:380px;
max-height:380px;display:block;background:#000}figcaption{font-size:.85em;color:#555}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(170px,1fr));gap:10px}
.grid figure{margin:0;font-size:.8em}.grid img{width:100%;display:block;background:#000}
.bar{height:8px;border:1px solid #999;margin:2px 0}
table{border-collapse:collapse;font-size:.8em;margin:.5em 0}td,th{border:1px solid #ddd;
padding:2px 6px;text-align:right}th{background:#f3f3f3}td:first-child{text-align:left}
"""


def _table(frame: Any) -> str:
    return frame.map(lambda v: f"{v:.4g}" if isinstance(v, float) else v).to_html(
        border=0, escape=True, na_rep="–")


def _tile_summary(d: Path, table: Any = None) -> tuple[str, dict[str, tuple[float, float]]]:
    """HTML of the tile-table summary, and per channel (mean positive, mean probability), of
    ``table`` (the tile table) or, without it, of the folder's."""
    import pandas as pd

    path = SlideFolder(d).tiles
    if table is None and not path.is_file():
        return "<p>No tile table.</p>", {}
    t = pd.read_parquet(path) if table is None else table
    if not len(t):
        return "<p>The tile table is empty (no tissue tiles).</p>", {}
    rows, means = [], {}
    for n in CHANNEL_NAMES:
        pf, mp = f"{n}.positive_fraction", f"{n}.mean_probability"
        if pf in t and mp in t:
            means[n] = (float(t[pf].mean()), float(t[mp].mean()))
            rows.append({"channel": n, "mean positive fraction": float(t[pf].mean()),
                         "p90 positive fraction": float(t[pf].quantile(0.9)),
                         "tiles ≥ 10% positive": int((t[pf] >= 0.1).sum()),
                         "mean probability": float(t[mp].mean())})
    head = (f"<p>{len(t)} tiles"
            + (f", mean tissue fraction {t['tissue_fraction'].mean():.2f}"
               if "tissue_fraction" in t else "") + ".</p>")
    return head + _table(pd.DataFrame(rows).set_index("channel")), means


def _features_html(d: Path, frame: Any = None) -> str:
    """HTML of the features table ``frame`` or, without it, of the folder's."""
    import pandas as pd

    from virtime.io import read_features

    if frame is None:
        path = SlideFolder(d).features_file
        if not path.is_file():
            return "<p>No features (translated with --no-features).</p>"
        frame, _ = read_features(path)
    if not len(frame):
        return "<p>The features table is empty.</p>"
    row = frame.iloc[0]
    grid: dict[str, dict[str, Any]] = {}
    other, pairs = {}, {}
    for col, v in row.items():
        name, _, metric = str(col).partition(".")
        if metric and ("|" in name or "&" in name):
            pairs[str(col)] = v
        elif metric and (name in CHANNEL_NAMES or "+" in name or "_" in name):
            grid.setdefault(name, {})[metric] = v
        else:
            other[str(col)] = v
    # Background channels (no protein; the statistics' negative controls) after the proteins,
    # labelled as such.
    background = [n for n in grid if n in BACKGROUND_CHANNELS]
    grid = {**{n: v for n, v in grid.items() if n not in background},
            **{f"{n} (background)": grid[n] for n in background}}
    # The channel table first; slide descriptors; the hundreds of pair features folded away,
    # one per row (they read down, not across).
    parts = []
    if grid:
        parts.append(_table(pd.DataFrame.from_dict(grid, orient="index")))
    if other:
        parts.append(_table(pd.DataFrame.from_dict(other, orient="index", columns=["value"])))
    if pairs:
        parts.append(f"<details><summary>{len(pairs)} channel-pair features (A|B: either "
                     "channel positive, A&amp;B: both)</summary>"
                     + _table(pd.DataFrame.from_dict(pairs, orient="index", columns=["value"]))
                     + "</details>")
    return "".join(parts)


def write_slide_page(slide_dir: str | os.PathLike[str], *, slide: Any = None,
                     he: NDArray[np.uint8] | None = None,
                     max_px: int = TOP_PX, grid_px: int = GRID_PX, quality: int = 80,
                     data: PageData | None = None) -> Path:
    """Write ``slide_dir/index.html``, the self-contained page of one translated slide.

    The H&E is read once (in strips, so memory does not grow with the slide's pixel count) and
    resized for every panel; ``he`` skips even that read.

    Parameters
    ----------
    slide_dir
        A slide's output folder (virtual mIF, tile table, features).
    slide
        The open slide (``virtime translate`` passes it; otherwise the summary's path is opened).
    he
        The H&E as ``(h, w, 3)`` uint8, at least ``max_px`` on its longer side (``virtime
        translate`` passes the one its thumbnail step read); read from the slide otherwise.
    max_px, grid_px
        Longer side of the top images and of each channel in the grid.
    quality
        JPEG quality of the embedded images.
    data
        The map levels and tables in memory (``virtime translate`` passes what it kept while
        writing them, for :func:`page_levels` of ``max_px`` and ``grid_px``): nothing of the
        folder is read back. Without it (``virtime view``, the report) the folder is read.
    """
    from virtime import __version__
    from virtime.io import atomic_path

    d = Path(slide_dir)
    slide = _open_slide(d, slide)
    summary = _read_summary(d)
    top_level = None if data is None else data.top
    if he is None:  # once, at the top panels' size; the channel grid's is smaller
        level = _mif_level(d, max_px)[0] if top_level is None else top_level
        he = _he_image(slide, _panel_size(level, max_px))
    top = slide_panels(d, (), max_px=max_px, quality=quality, slide=slide, he=he,
                       level=top_level)
    grid = slide_panels(d, PROTEIN_CHANNELS, max_px=grid_px, quality=quality, slide=slide,
                        composite_channels=("DAPI",), he=he,
                        level=None if data is None else data.grid)
    tiles_html, means = _tile_summary(d, None if data is None else data.tiles)
    sid = html.escape(str(summary.get("slide_id", d.name)))
    w, h = slide.dimensions
    meta = (f"{w} × {h} px at {slide.mpp:.4f} µm/px · slide {html.escape(str(slide.path))} · "
            f"virtime {__version__}")
    if summary.get("model_hash"):
        meta += f" · model {html.escape(str(summary['model_hash'])[:12])}…"
    comp = ", ".join(COMPOSITE_CHANNELS)
    figs = [("H&E", "H&amp;E"), ("composite", f"virtual mIF composite ({comp}) on black"),
            ("overlay", "the composite over the H&amp;E")]
    top_html = "".join(f"<figure><img alt='{html.escape(k)}' src='{_uri(top[k])}'>"
                       f"<figcaption>{cap}</figcaption></figure>" for k, cap in figs)
    cells = []
    for n in PROTEIN_CHANNELS:
        color = get_channel(n).color
        stat = means.get(n)
        text = (f" · {100 * stat[0]:.1f}% positive, mean p {stat[1]:.3f}" if stat else "")
        cells.append(f"<figure class='channel'><img alt='{html.escape(n)}' src='{_uri(grid[n])}'>"
                     f"<div class='bar' style='background:linear-gradient(to right,#000,{color})'>"
                     f"</div><b>{html.escape(n)}</b>{html.escape(text)}</figure>")
    doc = ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
           f"<title>virtime · {sid}</title><style>{_CSS}</style></head><body>"
           f"<h1>{sid}</h1><p class='meta'>{meta}</p><div class='top'>{top_html}</div>"
           "<h2>Virtual mIF channels</h2><p class='meta'>Each protein in its colour; brightness is "
           "the predicted probability (colour bar: 0 → 1). Pan and zoom the whole slide with "
           f"<code>virtime view {html.escape(str(d))}</code>.</p>"
           f"<div class='grid'>{''.join(cells)}</div>"
           f"<h2>Tiles</h2>{tiles_html}<h2>Slide features</h2>"
           f"{_features_html(d, None if data is None else data.features)}</body></html>")
    path = d / PAGE_NAME
    with atomic_path(path) as tmp:
        tmp.write_text(doc, encoding="utf-8")
    return path
