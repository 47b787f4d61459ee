"""Looking at a translation: the local deep-zoom viewer, the static per-slide page, galleries.

* :class:`ViewSource` reads one finished slide folder and renders tiles on demand;
  :class:`ViewServer` serves it to the browser (``virtime view``).
* :func:`write_slide_page` writes ``OUT/SLIDE_ID/index.html``, a self-contained page that opens
  from a file browser; :func:`slide_panels` gives the same thumbnails to the report galleries.
"""

from __future__ import annotations

from virtime.view.page import composite_rgb, slide_panels, write_slide_page
from virtime.view.server import ViewServer, error_page
from virtime.view.tiles import TILE, LRUCache, ViewSource, check_output_dir

__all__ = [
    "TILE",
    "LRUCache",
    "ViewServer",
    "ViewSource",
    "check_output_dir",
    "composite_rgb",
    "error_page",
    "slide_panels",
    "write_slide_page",
]
