"""Looking at a translation: the local deep-zoom viewer, the static per-slide page, galleries.

* :func:`view` (also ``virtime.view(...)``: this module is callable) serves a finished slide
  folder to the browser, as ``virtime view`` does; :class:`ViewSource` reads the folder and
  renders tiles on demand, :class:`ViewServer` serves them.
* :func:`write_slide_page` writes ``OUT/SLIDE_ID/index.html``, a self-contained page that opens
  from a file browser; :func:`slide_panels` gives the same thumbnails to the report galleries.
"""

from __future__ import annotations

import inspect
import sys
import types
from typing import Any

from virtime.view.launch import resolve_slide_dir, view
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
    "resolve_slide_dir",
    "slide_panels",
    "view",
    "write_slide_page",
]


class _CallableModule(types.ModuleType):
    """``virtime.view`` is both this subpackage and the function :func:`view`: calling the
    module calls the function (a subpackage attribute of ``virtime`` cannot also be a function,
    as importing the subpackage sets the attribute)."""

    def __call__(self, *args: Any, **kwargs: Any) -> ViewServer:
        return view(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
__signature__ = inspect.signature(view)  # what help() and inspect show for virtime.view(...)
