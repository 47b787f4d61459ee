"""Atomic file writes and the run manifest that makes an interrupted slide resumable.

A reader must never see half a file, and a run killed at any instant (``kill -9``) must leave
either the old file or the new one. Every writer here writes a temporary file in the *same*
folder (same file system, so the rename is atomic), flushes and fsyncs it, then ``os.replace``\\ s
it over the target. The :class:`RunManifest` is such a JSON file: it records which units of work
(row bands of the canvas, pyramid levels, ...) are complete, so a rerun redoes only the rest.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from virtime.errors import InputDataError, InvalidArgumentError, OutputError

__all__ = [
    "CommitOnExit",
    "RunManifest",
    "atomic_files",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_json",
]

_MANIFEST_FORMAT = 1


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as fh:  # make the bytes durable before a name points at them
        os.fsync(fh.fileno())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, mode: int | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` atomically.

    For writers that want a file name rather than bytes (tifffile, Pillow, matplotlib with an
    explicit ``format``, ``torch.onnx.export``). On an exception the temporary file is removed
    and ``path`` is left untouched. The file gets the permissions ``open()`` would give it, or
    ``mode`` (a cache shared between users asks for ``0o644`` whatever the umask).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Unique per process and call (pid + mkstemp's random suffix, created O_EXCL), so concurrent
    # writers of the same target never share a temporary file.
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.{os.getpid()}.",
                                        suffix=".partial", dir=target.parent)
    except OSError as exc:  # name the file the user asked for, not the temporary one
        raise OutputError.from_os_error(exc, target, name_target=True) from exc
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        _fsync_file(tmp)
        # mkstemp makes 0600; give what open() would, or the mode asked for
        os.chmod(tmp, 0o666 & ~_umask() if mode is None else mode)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_files(path: str | os.PathLike[str], *, mode: int | None = None) -> Iterator[Path]:
    """Like :func:`atomic_path`, for writers that put companion files beside their main file.

    Yields ``<temporary folder>/<path's name>`` in a new hidden folder next to ``path``; the
    writer writes the main file there and whatever it adds beside it (an ONNX model's external
    data, an OpenVINO IR's ``.bin``). On success every file in the folder is fsynced and renamed
    into ``path``'s folder, the main file last, so the main file never names a companion that is
    not there yet; on an exception nothing is renamed. The folder is removed either way.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        folder = Path(tempfile.mkdtemp(prefix=f".{target.name}.{os.getpid()}.",
                                       suffix=".partial", dir=target.parent))
    except OSError as exc:
        raise OutputError.from_os_error(exc, target, name_target=True) from exc
    try:
        main = folder / target.name
        yield main
        companions = sorted(p for p in folder.iterdir() if p != main)
        for file in [*companions, main]:
            _fsync_file(file)
            os.chmod(file, 0o666 & ~_umask() if mode is None else mode)
        for file in companions:
            os.replace(file, target.parent / file.name)
        os.replace(main, target)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class CommitOnExit:
    """``with`` for writers that finish with ``close()`` and drop their work with ``abort()``.

    Leaving the block normally commits (``close``); an exception aborts, so a half-written
    output is never renamed into place. Subclasses define both methods.
    """

    def close(self) -> Any:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Any:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *,
                       mode: int | None = None) -> None:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder, then rename);
    ``mode`` as in :func:`atomic_path`."""
    with atomic_path(path, mode=mode) as tmp:
        tmp.write_bytes(data)


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented UTF-8 JSON to ``path`` atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode("utf-8"))


class RunManifest:
    """A small JSON record of what finished, rewritten atomically after every update.

    The file holds the run's ``params`` (what was asked for: shape, mpp, overlap ...), a set of
    completed keys per ``stage`` and a ``finished`` flag. Resuming with different params is an
    error (the partial output would mix two settings); the caller reruns with ``--force``.

    Parameters
    ----------
    path
        The JSON file.
    params
        JSON-serialisable settings of the run; compared on :meth:`open`.
    """

    def __init__(self, path: str | os.PathLike[str], params: Mapping[str, Any]) -> None:
        self.path = Path(path)
        self.params: dict[str, Any] = json.loads(json.dumps(dict(params)))  # normalise tuples
        self._stages: dict[str, list[Any]] = {}
        self.finished = False

    @classmethod
    def create(cls, path: str | os.PathLike[str], params: Mapping[str, Any]) -> RunManifest:
        """A new, empty manifest written to ``path`` (replacing any previous one)."""
        manifest = cls(path, params)
        manifest._save()
        return manifest

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> RunManifest:
        """Read an existing manifest; a corrupt or foreign file raises :class:`InputDataError`."""
        path = Path(path)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputDataError(f"{path}: run manifest not found") from None
        except (OSError, ValueError) as exc:
            raise InputDataError(f"{path}: unreadable run manifest ({exc})") from None
        if not isinstance(raw, dict) or raw.get("format") != _MANIFEST_FORMAT:
            raise InputDataError(f"{path}: not a virtime run manifest (format {_MANIFEST_FORMAT})")
        manifest = cls(path, raw.get("params", {}))
        manifest._stages = {k: list(v) for k, v in raw.get("stages", {}).items()}
        manifest.finished = bool(raw.get("finished", False))
        return manifest

    @classmethod
    def open(
        cls, path: str | os.PathLike[str], params: Mapping[str, Any], *, resume: bool = True
    ) -> RunManifest:
        """Load the manifest at ``path`` to resume, or create a fresh one.

        With ``resume`` and an existing file whose params differ from ``params``, raise
        :class:`InvalidArgumentError` naming the first differing setting.
        """
        path = Path(path)
        if not resume or not path.exists():
            return cls.create(path, params)
        manifest = cls.load(path)
        wanted = json.loads(json.dumps(dict(params)))
        if manifest.params != wanted:
            keys = sorted(set(manifest.params) | set(wanted))
            diff = next(k for k in keys if manifest.params.get(k) != wanted.get(k))
            raise InvalidArgumentError(
                f"{path}: cannot resume, setting {diff!r} was {manifest.params.get(diff)!r} and is "
                f"now {wanted.get(diff)!r}; rerun with --force to start over"
            )
        return manifest

    def completed(self, stage: str) -> list[Any]:
        """Keys completed in ``stage``, in completion order."""
        return list(self._stages.get(stage, []))

    def is_complete(self, stage: str, key: Any) -> bool:
        """Whether ``key`` of ``stage`` is recorded as complete."""
        return key in self._stages.get(stage, [])

    def mark_complete(self, stage: str, key: Any) -> None:
        """Record ``key`` of ``stage`` as complete and persist (atomically) at once."""
        keys = self._stages.setdefault(stage, [])
        if key not in keys:
            keys.append(key)
        self._save()

    def mark_finished(self) -> None:
        """Record that the whole run is complete; a rerun may then skip it."""
        self.finished = True
        self._save()

    def _save(self) -> None:
        atomic_write_json(
            self.path,
            {
                "format": _MANIFEST_FORMAT,
                "params": self.params,
                "stages": self._stages,
                "finished": self.finished,
            },
        )
