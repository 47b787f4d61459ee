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

A finished slide folder also records *which file* it was made from (:func:`slide_source`):
its absolute path, size, modification time, the SHA-256 of 64 blocks sampled across the whole
file (the first and last MiB included) and, once translated, the SHA-256 of the whole file. A
different slide with the same id, or the same file changed since (repaired, rescanned: even with
the same size and header), is never reported as already done (:func:`same_source`). Hashing the
whole file costs one read of it per translation (2.7 s per GiB from the page cache, 4.9 s from
disk, on the 2-core development VM under load; a few times faster on an idle core with SHA-NI);
the skip check of an untouched file reads only the samples (under 10 MiB: 20-70 ms).
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from virtime.errors import SlideIdError

__all__ = [
    "IDENTITY_FIELDS",
    "SLIDE_EXTENSIONS",
    "BackgroundContentHash",
    "check_unique_ids",
    "content_sha256",
    "identity_fields",
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
#: Blocks sampled across the file for its identity, and the bytes of each (besides the first
#: and the last :data:`HEAD_BYTES`).
SAMPLE_BLOCKS = 62
SAMPLE_BYTES = 1 << 17

#: The identity fields of a translation fingerprint (:func:`identity_fields`): what a partial
#: canvas records of its slide file, so a resumed run belongs to the same file.
IDENTITY_FIELDS = ("slide_size", "slide_head_sha256", "slide_sampled_sha256")


#: Longest slide id, in UTF-8 bytes: it is a folder name (255 bytes on common file systems),
#: and some files beside it carry the id plus a suffix.
MAX_ID_BYTES = 200


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
    elif len(sid.encode("utf-8")) > MAX_ID_BYTES:
        problem = (f"is {len(sid.encode('utf-8'))} bytes long (at most {MAX_ID_BYTES}: it names "
                   f"a folder)")
        sid = sid[:40] + "…"
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
    """The identity of a slide file: absolute path, size, modification time (ns), SHA-256 of its
    first MiB and of blocks sampled across it (see the module doc).

    Cheap (under 10 MiB read whatever the file's size). Recorded in a finished slide folder's
    ``summary.json`` together with :func:`content_sha256`; :func:`same_source` compares two.
    """
    p = Path(path)
    st = p.stat()
    size = st.st_size
    head = hashlib.sha256()
    sampled = hashlib.sha256()
    with open(p, "rb") as fh:
        first = fh.read(HEAD_BYTES)
        head.update(first)
        sampled.update(first)
        if size > HEAD_BYTES:
            span = max(size - HEAD_BYTES - SAMPLE_BYTES, HEAD_BYTES)
            for k in range(1, SAMPLE_BLOCKS + 1):  # evenly spaced between head and tail
                fh.seek(HEAD_BYTES + (span - HEAD_BYTES) * k // (SAMPLE_BLOCKS + 1))
                sampled.update(fh.read(SAMPLE_BYTES))
            fh.seek(max(size - HEAD_BYTES, HEAD_BYTES))
            sampled.update(fh.read(HEAD_BYTES))
    return {"path": str(p.resolve()), "size": size, "mtime_ns": st.st_mtime_ns,
            "head_sha256": head.hexdigest(), "sampled_sha256": sampled.hexdigest()}


def content_sha256(path: str | os.PathLike[str],
                   stop: threading.Event | None = None) -> str | None:
    """SHA-256 of the whole file (one read of it; recorded when a slide is translated); None
    when ``stop`` is set before the read is done."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(8 << 20), b""):
            if stop is not None and stop.is_set():
                return None
            h.update(block)
    return h.hexdigest()


class BackgroundContentHash:
    """The whole file's SHA-256, computed on a daemon thread while the slide is translated.

    Why: the hash is only needed in the run record, and reading a multi-GiB slide takes seconds
    (about 3-5 s/GiB); started before the tile loop it overlaps it instead of delaying the first
    tile (file reads and ``hashlib`` release the GIL). :meth:`result` waits for it and re-raises
    a read error; :meth:`cancel` stops an interrupted run's read at the next 8 MiB block.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.seconds = 0.0  # time the thread spent reading and hashing
        self._stop = threading.Event()
        self._digest: str | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._hash, name="virtime-slide-hash", daemon=True)
        self._thread.start()

    def _hash(self) -> None:
        t0 = time.perf_counter()
        try:
            self._digest = content_sha256(self.path, self._stop)
        except BaseException as exc:  # handed to the caller by result()
            self._error = exc
        self.seconds = time.perf_counter() - t0

    def result(self) -> str:
        """The hex digest (waits for the thread)."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        if self._digest is None:
            raise RuntimeError(f"{self.path}: the content hash was cancelled")
        return self._digest

    def cancel(self) -> None:
        """Stop reading (an interrupted run); :meth:`result` then raises."""
        self._stop.set()


def identity_fields(source: Mapping[str, Any]) -> dict[str, Any]:
    """The :data:`IDENTITY_FIELDS` of a :func:`slide_source` record (for a fingerprint)."""
    return {"slide_size": source.get("size"), "slide_head_sha256": source.get("head_sha256"),
            "slide_sampled_sha256": source.get("sampled_sha256")}


def same_source(recorded: Mapping[str, Any] | None, current: Mapping[str, Any],
                path: str | os.PathLike[str] | None = None) -> bool:
    """Whether a recorded identity is the same file content as ``current`` (both from
    :func:`slide_source`; ``path``, the file of ``current``, for the full-content check).

    Size and the sampled hash must match. When the record has the whole file's hash and the
    file's modification time changed since (touched, copied, or rewritten in place), the whole
    file is hashed again and decides: a moved or copied slide is the same slide, a changed one
    is not. The path is informative only. A record of an older virtime (no sampled hash) is
    compared by size and the hash of the first MiB, as it was made.
    """
    if not recorded or recorded.get("size") != current.get("size"):
        return False
    if recorded.get("sampled_sha256") is None:
        return recorded.get("head_sha256") == current.get("head_sha256")
    if recorded.get("sampled_sha256") != current.get("sampled_sha256"):
        return False
    content = recorded.get("content_sha256")
    if content is None or recorded.get("mtime_ns") == current.get("mtime_ns"):
        return True
    if current.get("content_sha256") is not None:
        return bool(current["content_sha256"] == content)
    return path is not None and content_sha256(path) == content


def _resolved(p: Path) -> str:
    try:
        return str(p.resolve())
    except OSError:
        return str(p.absolute())
