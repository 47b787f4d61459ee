"""Locates and loads the OpenSlide shared library that the openslide-bin wheel installs.

The C++ core resolves OpenSlide's C functions at run time from this file, so the build needs no
OpenSlide headers. ``VIRTIME_OPENSLIDE_LIBRARY`` points at another build of the library.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path

from virtime.errors import OpenSlideLibraryError

__all__ = ["ensure_openslide", "openslide_library_path"]


def openslide_library_path() -> Path:
    """Path of libopenslide: the override variable, else the one inside openslide-bin."""
    override = os.environ.get("VIRTIME_OPENSLIDE_LIBRARY")
    if override:
        return Path(override)
    spec = importlib.util.find_spec("openslide_bin")
    if spec is None or not spec.submodule_search_locations:
        raise OpenSlideLibraryError(
            "the OpenSlide library is missing: install it with `pip install openslide-bin` "
            "or set VIRTIME_OPENSLIDE_LIBRARY to libopenslide's path"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    candidates = sorted(folder.glob("libopenslide*.so*")) + sorted(folder.glob("libopenslide*.dylib"))
    candidates += sorted(folder.glob("libopenslide*.dll"))
    if not candidates:
        raise OpenSlideLibraryError(f"{folder}: openslide-bin holds no libopenslide library")
    return candidates[0]


@functools.cache
def ensure_openslide() -> str:
    """Loads the library once per process; returns OpenSlide's version string."""
    from virtime import _core

    return str(_core.load_openslide(str(openslide_library_path())))
