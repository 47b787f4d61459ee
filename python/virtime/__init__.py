"""virtime: virtual multiplex immunofluorescence from H&E whole-slide images, at population scale.

Submodules are imported lazily so that ``import virtime`` stays fast and never requires optional
backends (TensorRT, ONNX Runtime) or the compiled core until they are used.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "errors", "channels", "translate"]

_LAZY_SUBMODULES = {
    "slide", "tissue", "tiling", "stain", "batcher", "simulate", "features", "stats", "report",
    "models", "engines", "stitch", "cli", "translation",
}


def __getattr__(name: str) -> Any:
    if name == "translate":  # the package's main job, as a function: virtime.translate(slide, ...)
        return importlib.import_module("virtime.translation").translate
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"virtime.{name}")
    raise AttributeError(f"module 'virtime' has no attribute {name!r}")


from virtime import channels, errors  # noqa: E402  (light, pure Python)
