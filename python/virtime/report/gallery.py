"""Slide galleries for the HTML report: the H&E beside the virtual mIF of chosen slides.

A table says *that* CD8 density is higher in one group; a gallery lets the reader see the slides
behind the number. For a feature the user names (``--gallery-feature CD8.tumour_density``) the
default choice is the slides with the highest and the lowest value; each row shows the H&E, the
virtual mIF composite, the channels the feature is about, and the feature's value. Panels are
small JPEG thumbnails (data URIs, read from a coarse pyramid level), so a report stays small.
"""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from virtime.channels import CHANNEL_NAMES
from virtime.errors import InputDataError, InvalidArgumentError
from virtime.report.html import HtmlBlock, ReportSection, TextBlock

__all__ = [
    "GalleryRow",
    "extreme_slides",
    "feature_channels",
    "gallery_block",
    "gallery_section",
    "slide_feature_values",
]

_CSS = ("<style>.gallery .grow{margin:.8em 0;padding-top:.4em;border-top:1px solid #ddd}"
        ".gallery .panels{display:flex;flex-wrap:wrap;gap:6px}.gallery figure{margin:0}"
        ".gallery img{display:block;background:#000}.gallery figcaption{font-size:.75em;"
        "color:#555}.gallery .label{font-size:.9em;margin:.2em 0}</style>")


@dataclass
class GalleryRow:
    """One slide of a gallery: its folder, a label, values to print and optional ground truth.

    ``truth`` is a ``(23, h, w)`` uint8 map (e.g. a simulated slide's ground-truth mIF); when
    given, its composite and channels are shown beside the virtual ones.
    """

    slide_dir: Path
    label: str
    values: dict[str, float] = field(default_factory=dict)
    truth: Any = None


def feature_channels(feature: str) -> list[str]:
    """Channels a feature is about: those named before the ``.`` (``CD8+CD3.density`` → CD8,
    CD3), plus CK for a tumour/stroma feature (the compartment it is measured in)."""
    name, _, metric = feature.partition(".")
    chans = [c for c in CHANNEL_NAMES if c in _split_name(name)]
    if ("tumour" in metric or "stroma" in metric or "tumor" in metric) and "CK" not in chans:
        chans.append("CK")
    return chans


def _split_name(name: str) -> set[str]:
    parts = {name}
    for sep in ("+", "&", "/", "|", "_x_"):
        parts |= {p for chunk in parts for p in chunk.split(sep)}
    return {p.strip() for p in parts}


def slide_feature_values(slides_dir: str | os.PathLike[str], feature: str) -> pd.Series:
    """``feature`` of every slide folder under ``slides_dir`` (from its features Parquet).

    Index: the folder (slide) name; slides without the feature or with NaN are left out.
    """
    from virtime.features import read_features
    from virtime.io import SlideFolder

    root = Path(slides_dir)
    if not root.is_dir():
        raise InputDataError(f"{root}: no such slides folder")
    values = {}
    for path in sorted(root.glob(f"*/{SlideFolder.FEATURES}")):
        frame, _ = read_features(path)
        if feature in frame.columns and len(frame) and np.isfinite(float(frame[feature].iloc[0])):
            values[path.parent.name] = float(frame[feature].iloc[0])
    if not values:
        raise InputDataError(f"{root}: no slide folder has feature {feature!r} "
                             f"(looked for */{SlideFolder.FEATURES})")
    return pd.Series(values, name=feature)


def extreme_slides(values: pd.Series, n: int = 1) -> list[tuple[str, str, float]]:
    """``(label, slide, value)`` of the ``n`` highest then the ``n`` lowest slides."""
    if n < 1:
        raise InvalidArgumentError(f"n must be >= 1, got {n}")
    s = values.dropna().sort_values(ascending=False, kind="stable")
    hi = list(s.index[:n])
    lo = [k for k in s.index[::-1][:n] if k not in hi]
    return ([("highest", k, float(s[k])) for k in hi]
            + [("lowest", k, float(s[k])) for k in lo])


def _img(jpeg: bytes, alt: str, caption: str) -> str:
    data = base64.b64encode(jpeg).decode("ascii")
    return (f"<figure><img alt='{html.escape(alt, quote=True)}' "
            f"src='data:image/jpeg;base64,{data}'><figcaption>{html.escape(caption)}"
            "</figcaption></figure>")


def gallery_block(rows: Sequence[GalleryRow], channels: Sequence[str], *, max_px: int = 160,
                  quality: int = 75) -> HtmlBlock:
    """The gallery's HTML: per row the H&E, the composite and ``channels``, virtual (and truth)."""
    from virtime.view.page import slide_panels

    parts = [_CSS, "<div class='gallery'>"]
    for row in rows:
        virt = slide_panels(row.slide_dir, channels, max_px=max_px, quality=quality)
        figs = [_img(virt["H&E"], "H&E", "H&E")]
        truth = None
        if row.truth is not None:
            truth = slide_panels(row.slide_dir, channels, max_px=max_px, quality=quality,
                                 probs=row.truth)
            figs.append(_img(truth["composite"], "ground truth composite",
                             "ground-truth mIF composite"))
        figs.append(_img(virt["composite"], "virtual composite", "virtual mIF composite"))
        for c in channels:
            if truth is not None:
                figs.append(_img(truth[c], f"ground truth {c}", f"{c} ground truth"))
            figs.append(_img(virt[c], f"virtual {c}", f"{c} virtual"))
        vals = "; ".join(f"{k} = {v:.4g}" for k, v in row.values.items())
        parts.append(f"<div class='grow'><p class='label'><b>{html.escape(row.label)}</b> · "
                     f"{html.escape(row.slide_dir.name)}{' · ' + html.escape(vals) if vals else ''}"
                     f"</p><div class='panels'>{''.join(figs)}</div></div>")
    parts.append("</div>")
    return HtmlBlock("".join(parts))


def gallery_section(slides_dir: str | os.PathLike[str], feature: str, *, n: int = 1,
                    channels: Sequence[str] | None = None, max_px: int = 160) -> ReportSection:
    """Report section: the slides with the highest and lowest ``feature`` under ``slides_dir``.

    Parameters
    ----------
    slides_dir
        The translation output root (``OUT``, one folder per slide).
    feature
        A features-table column, e.g. ``CD8.tumour_density``.
    n
        Slides at each end.
    channels
        Channels shown one by one (default: :func:`feature_channels`).
    """
    values = slide_feature_values(slides_dir, feature)
    chans = list(channels) if channels is not None else feature_channels(feature)
    rows = [GalleryRow(Path(slides_dir) / sid, f"{label} {feature}", {feature: v})
            for label, sid, v in extreme_slides(values, n)]
    sec = ReportSection(f"Gallery: {feature}", anchor="gallery")
    sec.add(TextBlock(
        f"The {n} slide(s) with the highest and the lowest {feature} of {len(values)} slides: "
        f"H&E, virtual mIF composite and {', '.join(chans) or 'no single channel'} (each channel "
        "in its colour, brightness = predicted probability). Open a slide at full resolution "
        "with virtime view OUT/SLIDE_ID."))
    sec.add(gallery_block(rows, chans, max_px=max_px))
    return sec
