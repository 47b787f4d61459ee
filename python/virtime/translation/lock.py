"""A per-slide lock: one run at a time writes a slide's output folder.

The lock is a small JSON file ``<slide folder>/.virtime.lock`` (owner host, pid, start time,
slide), created atomically with ``O_CREAT | O_EXCL``, so of two runs that start together exactly
one gets it. The other stops at once with one line naming the owner, or waits for it
(``timeout`` seconds, ``inf`` for ever). A lock whose owner is on this host and no longer alive
(a killed run) is *stale*: it is taken over with a warning. A lock held from another host cannot
be checked; the message says which host and pid, and to delete the file if that run is gone.

The takeover is safe against two runs finding the same stale lock: each locks the stale file
with ``flock`` and removes it only if the path still names that same file.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from virtime.errors import OutputError, OutputLockedError
from virtime.io.slide_folder import SlideFolder

__all__ = ["LOCK_NAME", "SlideLock", "slide_lock"]

log = logging.getLogger(__name__)

LOCK_NAME = SlideFolder.LOCK
_POLL_SECONDS = 0.5


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return True
    return True


def _read_owner(path: Path) -> dict[str, Any] | None:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # unreadable or half-written: treated as held, by an unknown owner
    return raw if isinstance(raw, dict) else {}


def _describe(owner: dict[str, Any]) -> str:
    if not owner:
        return "an unknown run (unreadable lock file)"
    started = owner.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if started else "?"
    return f"pid {owner.get('pid', '?')} on {owner.get('host', '?')} (started {when})"


def _is_stale(owner: dict[str, Any]) -> bool:
    if not owner or owner.get("host") != socket.gethostname():
        return False
    try:
        pid = int(owner["pid"])
    except (KeyError, TypeError, ValueError):
        return False
    return not _pid_alive(pid)


class SlideLock:
    """The lock of one slide folder; use :func:`slide_lock` (a context manager).

    ``name``, ``holder`` and ``wait_hint`` let another folder that one run at a time may write
    (a cohort's output root) be locked the same way, under its own file name and message.
    """

    def __init__(self, folder: str | os.PathLike[str], slide: str = "", *,
                 name: str = LOCK_NAME, holder: str = "another virtime run",
                 wait_hint: str = "wait for it (--wait)") -> None:
        self.path = Path(folder) / name
        self.slide = slide
        self._holder, self._wait_hint = holder, wait_hint
        self.held = False
        self._owner = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time(),
                       "slide": slide}

    def acquire(self, timeout: float = 0.0) -> SlideLock:
        """Take the lock, waiting up to ``timeout`` seconds for another run to release it."""
        deadline = time.monotonic() + max(float(timeout), 0.0)
        while True:
            if self._try_create():
                return self
            owner = _read_owner(self.path)
            if owner is None:
                continue  # released between our attempt and the read: try again at once
            if _is_stale(owner):
                if self._take_over(owner):
                    continue
            elif time.monotonic() >= deadline:
                raise OutputLockedError(
                    f"{self.path.parent}: locked by {self._holder}, {_describe(owner)}; "
                    f"{self._wait_hint}, or delete {self.path} if that run is gone"
                )
            else:
                time.sleep(min(_POLL_SECONDS, max(deadline - time.monotonic(), 0.01)))

    def _try_create(self) -> bool:
        data = json.dumps(self._owner).encode()
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        except OSError as exc:
            raise OutputError.from_os_error(exc, self.path) from exc
        try:
            os.write(fd, data)
            os.fsync(fd)
        except OSError as exc:
            os.close(fd)
            self.path.unlink(missing_ok=True)
            raise OutputError.from_os_error(exc, self.path) from exc
        os.close(fd)
        self.held = True
        return True

    def _take_over(self, owner: dict[str, Any]) -> bool:
        """Remove a stale lock if the path still names it; True when removed (or gone)."""
        import fcntl

        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                return True  # another run removed it first
            if not same or not _is_stale(_read_owner(self.path) or {}):
                return True  # replaced meanwhile: look again from the top
            log.warning("%s: taking over a stale lock of %s (that process is gone)",
                        self.path.parent, _describe(owner))
            self.path.unlink(missing_ok=True)
            return True
        finally:
            os.close(fd)

    def release(self) -> None:
        """Remove the lock file if this run holds it (idempotent)."""
        if not self.held:
            return
        self.held = False
        owner = _read_owner(self.path)
        if owner and owner.get("pid") == self._owner["pid"] and \
                owner.get("started") == self._owner["started"]:
            try:
                self.path.unlink(missing_ok=True)
            except OSError as exc:  # e.g. the folder became read-only: say so, do not mask
                if exc.errno not in (errno.ENOENT,):
                    log.warning("%s: could not remove the lock: %s", self.path, exc)


@contextlib.contextmanager
def slide_lock(folder: str | os.PathLike[str], slide: str = "",
               timeout: float = 0.0) -> Iterator[SlideLock]:
    """Hold the lock of a slide folder for the ``with`` block; released on every exit path."""
    lock = SlideLock(folder, slide).acquire(timeout)
    try:
        yield lock
    finally:
        lock.release()
