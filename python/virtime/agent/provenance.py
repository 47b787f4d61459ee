"""Provenance stamped on every tool result: what produced it, with which settings, from which files.

An agent's answer is only as checkable as its inputs: each result names the virtime version, the
translator's hash, the settings the call used and the sha256 of every input file, so a person can
reproduce it or see that a file changed since.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from typing import Any

from virtime import __version__

__all__ = ["FileHasher", "provenance"]


class FileHasher:
    """sha256 of files, cached by (path, size, mtime) so a slide is read once per change."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, int, int], str] = {}
        self._lock = threading.Lock()

    def file(self, path: str | os.PathLike[str]) -> str:
        """Hex sha256 of one file."""
        st = os.stat(path)
        key = (os.fspath(path), st.st_size, st.st_mtime_ns)
        with self._lock:
            if key in self._cache:
                return self._cache[key]
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        digest = h.hexdigest()
        with self._lock:
            self._cache[key] = digest
        return digest

    def inputs(self, paths: list[Path]) -> dict[str, str]:
        """``{path: sha256}`` of the files among ``paths``; a folder is hashed by its
        ``summary.json`` and ``features.parquet`` (what the tools read from a slide folder)."""
        from virtime.io import SlideFolder

        out: dict[str, str] = {}
        for p in paths:
            if p.is_dir():
                for name in (SlideFolder.SUMMARY, SlideFolder.FEATURES):
                    if (p / name).is_file():
                        out[str(p / name)] = self.file(p / name)
            elif p.is_file():
                out[str(p)] = self.file(p)
        return out


def provenance(*, model_hash: str | None, settings: dict[str, Any],
               inputs: dict[str, str]) -> dict[str, Any]:
    """The provenance block of a tool result (JSON-ready)."""
    return {"virtime_version": __version__, "model_hash": model_hash or "none",
            "settings": settings, "input_sha256": inputs}
