"""Reading a translated slide's OME-Zarr map: levels, channel names, mpp, and chunk checks.

The writer (:mod:`virtime.stitch.omezarr`) stores every chunk, empty ones too, so a chunk file
that is absent was lost and would silently read as zeros. The readers here (``virtime
features``, ``virtime view``, a rerun's look at a finished folder) check for that: by ``stat``
(:func:`array_problem` without headers), by Blosc header (:func:`verify_array`) or on each read
(:class:`VerifiedArray`). Verification belongs to readers; the writer does not read back what it
has just written.

:func:`read_ome_zarr` is the one reader: levels, channel names, mpp and the ``virtime``
attributes of a store, every chunk checked on request.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from virtime.channels import CHANNEL_NAMES
from virtime.errors import InputDataError

__all__ = [
    "OmeZarrImage",
    "VerifiedArray",
    "array_problem",
    "read_ome_zarr",
    "verify_array",
]

_BLOSC_HEADER = 16


def _chunk_file(array: Any, coords: tuple[int, ...]) -> Path:
    store = array.store
    root = Path(getattr(store, "root", ""))
    return root / array.path / array.metadata.encode_chunk_key(coords)


def _chunk_grid(array: Any) -> tuple[int, ...]:
    stored = getattr(array, "shards", None) or array.chunks
    return tuple(-(-int(n) // int(c)) for n, c in zip(array.shape, stored))


def _blosc_problem(head: bytes, size: int, nbytes: int) -> str | None:
    """Why a Blosc chunk of ``size`` bytes starting with ``head`` is not whole (None if it is)."""
    if len(head) < _BLOSC_HEADER:
        return f"truncated ({size} bytes, shorter than the Blosc header)"
    stored = int.from_bytes(head[12:16], "little")
    raw = int.from_bytes(head[4:8], "little")
    if stored != size:
        return f"truncated or corrupt ({size} bytes on disk, its header says {stored})"
    if raw != nbytes:
        return f"corrupt (decodes to {raw} bytes, a chunk holds {nbytes})"
    return None


def array_problem(array: Any, where: str | os.PathLike[str] | None = None, *,
                  headers: bool = True) -> str | None:
    """What is wrong with the chunks of a Zarr array in a local store (None: nothing found).

    virtime writes every chunk (:func:`writable_level`), so a chunk file that is absent was lost,
    and reading it would silently give ``fill_value``. Each expected chunk key must exist and be
    non-empty; with ``headers``, for Zarr-v2 Blosc chunks the 16-byte header must also agree
    with the file size and the chunk size (a truncated chunk). Without ``headers`` only the
    files' sizes are looked at (one ``stat`` per chunk: the cheap check of a rerun's skip).
    The message names the first bad chunk file, the problem and how many chunks are affected.
    """
    root = Path(getattr(array.store, "root", ""))
    label = Path(where) if where is not None else root / array.path
    if not getattr(array.store, "root", None):
        return None  # not a local store: nothing to list
    meta = array.metadata
    compressor = getattr(meta, "compressor", None)
    blosc = headers and (getattr(compressor, "codec_id", None) == "blosc" or (
        isinstance(compressor, dict) and compressor.get("id") == "blosc"))
    nbytes = int(np.prod(array.chunks)) * np.dtype(array.dtype).itemsize
    missing: list[Path] = []
    broken: list[tuple[Path, str]] = []
    for coords in np.ndindex(*_chunk_grid(array)):
        path = _chunk_file(array, coords)
        try:
            size = path.stat().st_size
        except (FileNotFoundError, NotADirectoryError):
            missing.append(path)
            continue
        if size == 0:
            broken.append((path, "empty (0 bytes)"))
        elif blosc:
            with open(path, "rb") as fh:
                problem = _blosc_problem(fh.read(_BLOSC_HEADER), size, nbytes)
            if problem:
                broken.append((path, problem))
    total = int(np.prod(_chunk_grid(array)))
    if missing:
        return (f"{missing[0]}: chunk missing ({len(missing)} of {total} chunks of {label} "
                f"absent); the map is incomplete")
    if broken:
        path, problem = broken[0]
        more = f" ({len(broken)} of {total} chunks of {label} damaged)" if len(broken) > 1 else ""
        return f"{path}: chunk {problem}{more}"
    return None


def verify_array(array: Any, where: str | os.PathLike[str] | None = None) -> None:
    """Check that every chunk of a Zarr array in a local store is on disk and whole
    (:func:`array_problem`, headers included). Chunks that decode badly anyway are caught on
    reading by :class:`VerifiedArray`.

    Raises
    ------
    InputDataError
        Naming the first bad chunk file, the problem and how many chunks are affected.
    """
    problem = array_problem(array, where)
    if problem is not None:
        raise InputDataError(f"{problem}; rerun virtime translate --force")


class VerifiedArray:
    """A Zarr array whose reads turn a chunk that fails to decode into an InputDataError.

    Wraps what :func:`verify_array` checked; a read that fails (a corrupt chunk whose header looks
    whole) names the chunk file rather than surfacing a codec's RuntimeError. With
    ``check_present`` each read first checks that the chunk files it touches exist (a few
    ``stat`` calls; for readers that open without :func:`verify_array`, such as the viewer), so
    a lost chunk is an error instead of ``fill_value``.
    """

    def __init__(self, array: Any, *, check_present: bool = False) -> None:
        self.array = array
        self.shape = tuple(array.shape)
        self.dtype = np.dtype(array.dtype)
        self.chunks = tuple(array.chunks)
        self.ndim = len(self.shape)
        self.check_present = bool(check_present) and bool(getattr(array.store, "root", None))

    def __getitem__(self, key: Any) -> Any:
        if self.check_present:
            for coords in itertools.product(*self._chunk_ranges(key)):
                path = _chunk_file(self.array, coords)
                if not path.is_file():
                    raise InputDataError(f"{path}: chunk missing (the map is incomplete); "
                                         f"rerun virtime translate --force")
        try:
            return self.array[key]
        except InputDataError:
            raise
        except Exception as exc:  # codecs raise RuntimeError, ValueError, ...
            raise InputDataError(f"{self._culprit(key)}: chunk cannot be decoded ({exc}); "
                                 f"rerun virtime translate --force") from exc

    def _chunk_ranges(self, key: Any) -> list[range]:
        """Per axis, the chunk indices a read of ``key`` (ints and slices) touches."""
        keys = key if isinstance(key, tuple) else (key,)
        ranges = []
        for d, n in enumerate(self.shape):
            k = keys[d] if d < len(keys) else slice(None)
            start, stop, _ = (k if isinstance(k, slice) else slice(int(k), int(k) + 1)).indices(n)
            c = self.chunks[d]
            ranges.append(range(start // c, max(start // c + 1, -(-stop // c))))
        return ranges

    def _culprit(self, key: Any) -> Path:
        """The first chunk file of the failed read that fails on its own."""
        for coords in itertools.product(*self._chunk_ranges(key)):
            sel = tuple(slice(i * c, (i + 1) * c) for i, c in zip(coords, self.chunks))
            try:
                self.array[sel]
            except Exception:  # noqa: BLE001 - any failure marks the culprit
                return _chunk_file(self.array, coords)
        return Path(getattr(self.array.store, "root", "")) / self.array.path


def _multiscales(attrs: dict[str, Any]) -> list[dict[str, Any]]:
    if "ome" in attrs and isinstance(attrs["ome"], dict):  # NGFF 0.5 (zarr v3)
        attrs = attrs["ome"]
    ms = attrs.get("multiscales", [])
    return [m for m in ms if isinstance(m, dict)] if isinstance(ms, list) else []


@dataclass(frozen=True)
class OmeZarrImage:
    """A multiscale OME-Zarr image as :func:`read_ome_zarr` found it.

    ``levels[0]`` is the finest ``(c, y, x)`` array (:class:`VerifiedArray`\\ s when read with
    ``verify``); ``mpp`` the level-0 pixel size in µm from its scale transform (None without
    one); ``attrs`` the group's attributes.
    """

    path: Path
    attrs: dict[str, Any]
    levels: list[Any]
    level_paths: list[str]
    channels: tuple[str, ...]
    mpp: float | None

    @property
    def virtime(self) -> dict[str, Any]:
        """The ``virtime`` attribute block (settings of the run that wrote the map)."""
        vt = self.attrs.get("virtime")
        return vt if isinstance(vt, dict) else {}

    @property
    def model_hash(self) -> str:
        """The translator's hash: ``model_hash`` at top level or in the ``virtime`` block."""
        vt = self.virtime
        return str(self.attrs.get("model_hash") or vt.get("model_hash")
                   or vt.get("model_sha256") or "")


def read_ome_zarr(path: str | os.PathLike[str], *, verify: bool = True) -> OmeZarrImage:
    """Opens an OME-Zarr multiscale image (NGFF 0.4, or 0.5's ``ome`` block) for reading.

    Channel names come from the ``omero`` labels (the 23 GigaTIME names for a 23-channel map
    without them). With ``verify`` every chunk of every level must be on disk and whole
    (:func:`verify_array`; a missing chunk would read as zeros) and reads that fail to decode
    name the chunk; ``verify=False`` only opens (cheap whatever the size: the viewer).

    Raises
    ------
    InputDataError
        Naming the store or the level that cannot be opened, is missing or damaged.
    """
    import zarr

    store = Path(path)
    try:
        group = zarr.open_group(str(store), mode="r")
    except Exception as exc:  # zarr raises several types for a bad store
        raise InputDataError(f"{store}: cannot open ({exc})") from exc
    attrs: dict[str, Any] = dict(group.attrs)
    ms = _multiscales(attrs)
    datasets = [d for d in ms[0].get("datasets", []) if isinstance(d, dict)] if ms else []
    paths = [str(d.get("path", "0")) for d in datasets] or ["0"]
    mpp: float | None = None
    if datasets:
        axes = [a["name"] if isinstance(a, dict) else a for a in ms[0].get("axes", [])]
        for tr in datasets[0].get("coordinateTransformations", []):
            if tr.get("type") == "scale" and "y" in axes:
                mpp = float(tr["scale"][axes.index("y")])
    levels: list[Any] = []
    for k, level_path in enumerate(paths):
        try:
            arr: Any = group[level_path]
        except KeyError:
            what = "level missing" if k == 0 else "pyramid level missing"
            raise InputDataError(f"{store / level_path}: {what}") from None
        if k == 0 and len(getattr(arr, "shape", ())) != 3:
            raise InputDataError(f"{store / level_path}: not a (c, y, x) array")
        if verify:
            verify_array(arr, store / level_path)
            arr = VerifiedArray(arr)
        levels.append(arr)
    n_channels = int(levels[0].shape[0])
    ome: Any = attrs.get("ome") if isinstance(attrs.get("ome"), dict) else {}
    omero: Any = attrs.get("omero") or ome.get("omero") or {}
    chans: Any = omero.get("channels", []) if isinstance(omero, dict) else []
    labels = tuple(str(c.get("label", "")) if isinstance(c, dict) else "" for c in chans)
    if len(labels) != n_channels or not all(labels):
        labels = CHANNEL_NAMES if n_channels == len(CHANNEL_NAMES) else ()
    if not labels:
        raise InputDataError(f"{store}: {n_channels} channels and no channel names")
    return OmeZarrImage(store, attrs, levels, paths, tuple(labels), mpp)
