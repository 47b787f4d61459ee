"""virtime: virtual multiplex immunofluorescence from H&E whole-slide images, at population scale.

The main entry points are importable from the top::

    import virtime
    with virtime.open_slide("slide.svs") as slide:
        result = virtime.translate(slide, virtime.load_model("model.pth"), "out",
                                   virtime.TranslateConfig())
    features = result.folder.features()           # also .cells(), .mif()
    features, meta = virtime.read_features("out/<slide_id>/features.parquet")
    cohort_table = virtime.merge_features("out")  # one row per finished slide
    server = virtime.view(result.output_dir)      # the local viewer; server.close() stops it

Every subpackage (``virtime.demo``, ``virtime.cohort``, ``virtime.stats`` …) is reachable as an
attribute. Submodules and entry points are imported lazily, so ``import virtime`` stays fast and
never requires optional backends (TensorRT, ONNX Runtime) or the compiled core until they are used.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Public name -> (module, attribute): the functions and classes a notebook user starts from.
_ENTRY_POINTS: dict[str, tuple[str, str]] = {
    "open_slide": ("virtime.slide", "open_slide"),
    "Slide": ("virtime.slide", "Slide"),
    "load_model": ("virtime.models", "load"),
    "translate": ("virtime.translation", "translate"),
    "TranslateConfig": ("virtime.translation", "TranslateConfig"),
    "TranslateResult": ("virtime.translation", "TranslateResult"),
    "read_features": ("virtime.io", "read_features"),
    "merge_features": ("virtime.features", "merge_features"),
    "join_features": ("virtime.stats", "join_features"),
    "associate": ("virtime.stats", "associate"),
    "survival_analysis": ("virtime.stats", "survival_analysis"),
    "CHANNEL_NAMES": ("virtime.channels", "CHANNEL_NAMES"),
}

# Every subpackage and public module, reachable as ``virtime.<name>`` after ``import virtime``.
_SUBMODULES: frozenset[str] = frozenset({
    "agent", "batcher", "bench", "cells", "channels", "cli", "cohort", "demo", "embed", "engines",
    "errors", "evaluation", "features", "io", "models", "mpp", "quantize", "report", "simulate",
    "slide",
    "slide_ids", "slide_info", "stain", "stats", "stitch", "tile_export", "tiling", "tissue",
    "training", "translation", "view",
})

__all__ = [
    "CHANNEL_NAMES", "Slide", "TranslateConfig", "TranslateResult", "__version__", "associate",
    "channels", "errors", "join_features", "load_model", "merge_features", "open_slide",
    "read_features", "survival_analysis", "translate", "view",
]


def _available_submodules() -> list[str]:
    """The names in ``_SUBMODULES`` that exist in this installation (some are optional)."""
    import importlib.util

    return sorted(n for n in _SUBMODULES if importlib.util.find_spec(f"virtime.{n}") is not None)


def __getattr__(name: str) -> Any:
    if name in _ENTRY_POINTS:
        module, attr = _ENTRY_POINTS[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value  # later lookups skip __getattr__
        return value
    if name in _SUBMODULES:
        try:
            return importlib.import_module(f"virtime.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"virtime.{name}":
                raise  # a real import error inside the subpackage, not a missing subpackage
            raise AttributeError(f"module 'virtime' has no attribute {name!r}") from None
    raise AttributeError(f"module 'virtime' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The public surface only: entry points and subpackages (what tab completion should offer)."""
    return sorted({*__all__, *_available_submodules()})


from virtime import channels, errors  # light, pure Python
