"""Slide ids: the one rule that turns a slide file into the name of its output folder.

Every command that writes per-slide outputs (``translate``, ``embed``, ``cohort``) names the
slide's folder and its rows in the tables by this id, so features, embeddings and cohort tables
join on it. The rule:

* The id is the file **name** (no folder) with its **slide extension** removed, when it ends with
  one of :data:`SLIDE_EXTENSIONS` (case-insensitive, longest first, so ``x.ome.tiff`` → ``x``).
  Only that extension is removed: ``TCGA-AA-3512-01Z-00-DX1.<uuid>.svs`` →
  ``TCGA-AA-3512-01Z-00-DX1.<uuid>``, ``case.A.svs`` → ``case.A``. A name without a known slide
  extension is kept whole (``scan.jpg`` → ``scan.jpg``).
* An id that is empty, ``.`` / ``..``, starts with a dot (``.hidden.svs`` → ``.hidden``: a
  hidden folder), or contains a path separator, a NUL or a control character is **refused**
  with :class:`~virtime.errors.SlideIdError` (never sanitised: two different files must never be
  mapped to the same folder by a silent rewrite). Rename the file or give the id explicitly
  (``slide_id`` column of a cohort manifest).
* Ids must be unique within a run, compared **case-insensitively** (output folders on macOS and
  Windows are): :func:`check_unique_ids` raises naming both files before any work starts.

A finished slide folder also records *which file* it was made from (:func:`slide_source`:
absolute path, size, hash of the first MiB), so a different slide with the same id is never
reported as already done.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from virtime.errors import SlideIdError

__all__ = [
    "SLIDE_EXTENSIONS",
    "check_unique_ids",
    "same_source",
    "slide_id_from_path",
    "slide_source",
    "validate_slide_id",
]

#: File-name endings removed to form a slide id (compared case-insensitively, longest first).
SLIDE_EXTENSIONS: tuple[str, ...] = tuple(sorted({
    ".ome.tiff", ".ome.tif", ".svs", ".tif", ".tiff", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu",
    ".bif", ".dcm", ".svslide", ".qptiff", ".czi", ".isyntax",
}, key=lambda e: (-len(e), e)))

#: Bytes of the slide file hashed for its identity (the header and the first tiles).
HEAD_BYTES = 1 << 20


def validate_slide_id(slide_id: str, source: str | os.PathLike[str] | None = None) -> str:
    """Return ``slide_id`` if it is usable as one output folder name; raise otherwise.

    Parameters
    ----------
    slide_id
        The id to check.
    source
        The slide file it came from, named in the error.
    """
    where = f"{source}: " if source is not None else ""
    sid = str(slide_id)
    problem = None
    if sid in ("", ".", ".."):
        problem = "is empty" if sid == "" else f"is {sid!r}"
    elif sid.startswith("."):
        problem = "starts with '.' (it would be a hidden folder)"
    elif any(c in sid for c in ("/", "\\")):
        problem = "contains a path separator"
    elif any(ord(c) < 32 for c in sid):
        problem = "contains a control character"
    if problem is not None:
        raise SlideIdError(
            f"{where}slide id {sid!r} {problem}; rename the file or give an explicit slide id"
        )
    return sid


def slide_id_from_path(path: str | os.PathLike[str]) -> str:
    """The slide id of ``path``: its file name minus a known slide extension (see module doc).

    >>> slide_id_from_path("/data/TCGA-AA-3512-01Z-00-DX1.0a1b-22c3.svs")
    'TCGA-AA-3512-01Z-00-DX1.0a1b-22c3'
    >>> slide_id_from_path("case.A.svs"), slide_id_from_path("x.ome.tiff")
    ('case.A', 'x')
    """
    name = Path(path).name
    lower = name.lower()
    for ext in SLIDE_EXTENSIONS:
        if lower.endswith(ext):
            name = name[: -len(ext)]
            break
    return validate_slide_id(name, path)


def check_unique_ids(
    paths: Iterable[str | os.PathLike[str]], ids: Iterable[str] | None = None
) -> list[str]:
    """Ids of ``paths`` (or the given ``ids``), checked unique within one run.

    Raises :class:`~virtime.errors.SlideIdError` naming both files of the first collision (ids
    compared case-insensitively), before any work is done.
    """
    files = [Path(p) for p in paths]
    id_list = [slide_id_from_path(p) for p in files] if ids is None else [str(i) for i in ids]
    seen: dict[str, int] = {}
    for i, sid in enumerate(id_list):
        key = sid.casefold()
        if key in seen:
            j = seen[key]
            same = _resolved(files[j]) == _resolved(files[i])
            what = "is given twice" if same else "give the same slide id"
            raise SlideIdError(
                f"{files[j]} and {files[i]} {what} ({id_list[j]!r}"
                + ("" if id_list[j] == sid else f" / {sid!r}")
                + "): each slide needs its own output folder; rename one, give explicit ids, or "
                "translate them into different output folders"
            )
        seen[key] = i
    return id_list


def slide_source(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The identity of a slide file: absolute path, size and SHA-256 of its first MiB.

    Recorded in a finished slide folder's ``summary.json``; :func:`same_source` compares two.
    """
    p = Path(path)
    h = hashlib.sha256()
    with open(p, "rb") as fh:
        h.update(fh.read(HEAD_BYTES))
    return {"path": str(p.resolve()), "size": p.stat().st_size, "head_sha256": h.hexdigest()}


def same_source(recorded: Mapping[str, Any] | None, current: Mapping[str, Any]) -> bool:
    """Whether a recorded identity is the same file content as ``current``.

    Size and header hash decide; the path is informative only (a moved or copied slide is the
    same slide).
    """
    if not recorded:
        return False
    return (recorded.get("size") == current.get("size")
            and recorded.get("head_sha256") == current.get("head_sha256"))


def _resolved(p: Path) -> str:
    try:
        return str(p.resolve())
    except OSError:
        return str(p.absolute())
