"""Which paths an agent may read and write: the ``--allow`` roots and the ``--output`` folder.

Every path a tool receives goes through :class:`PathGuard` before anything opens it. A path is
resolved with symlinks followed (``os.path.realpath``) and must then lie under one of the roots,
resolved the same way, so ``..`` segments and symlinks that point out of a root are refused
alike; the refusal names the path as given and says which folders are allowed.
"""

from __future__ import annotations

import os
from pathlib import Path

from virtime.errors import InputDataError, VirtimeError

__all__ = ["PathGuard", "PathRefusedError"]


class PathRefusedError(VirtimeError, PermissionError):
    """A tool was asked to read or write outside the folders the server was started with."""


def _real(path: str | os.PathLike[str]) -> Path:
    return Path(os.path.realpath(os.fspath(path)))


def _is_under(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


class PathGuard:
    """Resolves and checks the paths tools receive.

    Parameters
    ----------
    allow
        Roots that may be read.
    out
        The output root: the only place written to, and readable too. Created if missing.
    """

    def __init__(self, allow: tuple[Path, ...], out: Path) -> None:
        self.out = _real(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.read_roots = tuple(dict.fromkeys([*(_real(a) for a in allow), self.out]))

    def _anchor(self, path: str | os.PathLike[str], base: Path) -> Path:
        """``path`` as given, relative paths taken from ``base`` (not the server's cwd)."""
        p = Path(os.path.expanduser(os.fspath(path)))
        return p if p.is_absolute() else base / p

    def readable(self, path: str | os.PathLike[str], *, kind: str = "file") -> Path:
        """The resolved path of an existing ``kind`` ("file", "folder" or "any") to read.

        Relative paths are taken from the first ``--allow`` root. Raises
        :class:`PathRefusedError` outside the roots and :class:`InputDataError` when missing.
        """
        given = self._anchor(path, self.read_roots[0])
        real = _real(given)
        if not any(_is_under(real, root) for root in self.read_roots):
            raise PathRefusedError(
                f"{path}: refused, outside the folders this server may read "
                f"({', '.join(str(r) for r in self.read_roots)})"
                + (f"; it resolves to {real}" if str(real) != os.fspath(path) else ""))
        if kind == "file" and not real.is_file():
            raise InputDataError(f"{path}: no such file" if not real.exists()
                                 else f"{path}: not a file")
        if kind == "folder" and not real.is_dir():
            raise InputDataError(f"{path}: no such folder" if not real.exists()
                                 else f"{path}: not a folder")
        if kind == "any" and not real.exists():
            raise InputDataError(f"{path}: no such file or folder")
        return real

    def writable(self, path: str | os.PathLike[str]) -> Path:
        """The resolved path of something to write, which must lie under ``out``.

        Relative paths are taken from ``out``. The parent folders are not created here.
        """
        given = self._anchor(path, self.out)
        real = _real(given)
        if not _is_under(real, self.out) or real == self.out:
            raise PathRefusedError(f"{path}: refused, outputs go only under {self.out}")
        return real

    def output_folder(self, path: str | os.PathLike[str]) -> Path:
        """An existing folder under ``out`` that a tool writes into (e.g. a slide folder)."""
        real = self.readable(path, kind="folder")
        if not _is_under(real, self.out):
            raise PathRefusedError(f"{path}: refused, this tool writes into the folder, and "
                                   f"outputs go only under {self.out}")
        return real
