"""A self-contained HTML report: sections of text, tables and figures (base64 PNG), one file.

The report must open offline from an e-mail attachment or a shared drive, so nothing is linked:
styles are inline and every figure is a ``data:image/png;base64`` URI. Sections are plain data
(:class:`ReportSection` with a list of blocks), so any caller — the standard statistics sections,
or the end-to-end demo adding "recovery of planted effects" — builds its own and passes the list to
:func:`build_report`.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from virtime.errors import InvalidArgumentError

__all__ = [
    "Block",
    "FigureBlock",
    "HtmlBlock",
    "ReportSection",
    "TableBlock",
    "TextBlock",
    "build_report",
    "figure_block",
    "render_report",
]


@dataclass(frozen=True)
class TextBlock:
    """A paragraph of plain text (escaped; blank lines split paragraphs)."""

    text: str


@dataclass(frozen=True)
class TableBlock:
    """A DataFrame shown as an HTML table (first ``max_rows`` rows, floats to 4 significant)."""

    table: pd.DataFrame
    caption: str = ""
    max_rows: int = 50
    index: bool = False


@dataclass(frozen=True)
class FigureBlock:
    """A PNG image (bytes) with a caption; see :func:`figure_block` for matplotlib figures."""

    png: bytes
    caption: str = ""
    alt: str = "figure"


@dataclass(frozen=True)
class HtmlBlock:
    """Trusted raw HTML (not escaped) for callers that need custom markup."""

    html: str


Block = TextBlock | TableBlock | FigureBlock | HtmlBlock


@dataclass
class ReportSection:
    """A titled section: a list of blocks rendered in order; ``anchor`` for the contents list."""

    title: str
    blocks: list[Block] = field(default_factory=list)
    anchor: str = ""

    def add(self, block: Block) -> ReportSection:
        """Appends a block; returns self so calls chain."""
        self.blocks.append(block)
        return self


def figure_block(fig: object, caption: str = "", dpi: int = 110) -> FigureBlock:
    """Renders a matplotlib figure to PNG bytes (Agg, no display needed) as a :class:`FigureBlock`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if getattr(fig, "canvas", None) is None or not hasattr(fig.canvas, "print_png"):
        FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)  # type: ignore[attr-defined]
    return FigureBlock(buf.getvalue(), caption, alt=caption or "figure")


_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1100px;
color:#222;line-height:1.45;padding:0 1em}
h1{font-size:1.6em;border-bottom:2px solid #444}h2{font-size:1.25em;margin-top:2em;
border-bottom:1px solid #ccc}
table{border-collapse:collapse;font-size:0.8em;margin:0.6em 0}
td,th{border:1px solid #ddd;padding:2px 6px;text-align:right}th{background:#f3f3f3}
figure{margin:1em 0}figure img{max-width:100%}figcaption,caption{font-size:0.85em;color:#555}
nav li{font-size:0.9em}.meta{color:#666;font-size:0.85em}
"""


def _fmt(v: object) -> object:
    if isinstance(v, float):
        return f"{v:.4g}"
    return v


def _render_block(block: Block) -> str:
    if isinstance(block, TextBlock):
        paras = [p.strip() for p in block.text.split("\n\n") if p.strip()]
        return "".join(f"<p>{html.escape(p)}</p>" for p in paras)
    if isinstance(block, TableBlock):
        t = block.table
        more = len(t) - block.max_rows
        shown = t.head(block.max_rows)
        body = shown.map(_fmt).to_html(index=block.index, border=0, escape=True)
        cap = html.escape(block.caption)
        if more > 0:
            cap += f" (first {block.max_rows} of {len(t)} rows)"
        return (f"<div class='table'><p class='meta'>{cap}</p>{body}</div>" if cap else body)
    if isinstance(block, FigureBlock):
        data = base64.b64encode(block.png).decode("ascii")
        return (f"<figure><img alt='{html.escape(block.alt, quote=True)}' "
                f"src='data:image/png;base64,{data}'/>"
                f"<figcaption>{html.escape(block.caption)}</figcaption></figure>")
    if isinstance(block, HtmlBlock):
        return block.html
    raise InvalidArgumentError(f"unknown report block {type(block).__name__}")


def render_report(sections: list[ReportSection], title: str = "virtime report",
                  subtitle: str = "") -> str:
    """The whole HTML document as a string."""
    from virtime import __version__

    anchors = []
    parts = []
    for i, sec in enumerate(sections):
        anchor = sec.anchor or f"s{i + 1}"
        anchors.append((anchor, sec.title))
        body = "".join(_render_block(b) for b in sec.blocks)
        parts.append(f"<section id='{html.escape(anchor, quote=True)}'>"
                     f"<h2>{html.escape(sec.title)}</h2>{body}</section>")
    nav = "".join(f"<li><a href='#{html.escape(a, quote=True)}'>{html.escape(t)}</a></li>"
                  for a, t in anchors)
    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
            f"<h1>{html.escape(title)}</h1><p class='meta'>{html.escape(subtitle)} "
            f"virtime {__version__} · {stamp}</p><nav><ul>{nav}</ul></nav>"
            + "".join(parts) + "</body></html>")


def build_report(sections: list[ReportSection], path: str | Path, *, title: str = "virtime report",
                 subtitle: str = "") -> Path:
    """Writes the sections as one self-contained HTML file, atomically; returns the path."""
    from virtime.io import atomic_path

    path = Path(path)
    text = render_report(sections, title, subtitle)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path
