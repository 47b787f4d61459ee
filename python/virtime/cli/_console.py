"""How the command line talks to its user: one line per error, warning and log record.

A user of ``virtime`` reads messages, not Python internals. For the length of one command,
:func:`console_session`

* shows each warning once, as ``virtime CMD: warning: MESSAGE`` (no category, file or source
  line; a third-party warning names its package);
* logs without tracebacks (``-vv`` shows them, for a bug report);
* turns SIGTERM (a batch scheduler's time limit, ``kill``) into :class:`Terminated`, a
  ``KeyboardInterrupt``, so a terminated run cleans up exactly as after Ctrl-C: locks released,
  partial outputs resumable, an ``interrupted`` event in ``--log-json``; after either, only
  errors are logged while the run winds down;

and :func:`error_line` words an exception as the one line the CLI prints. Everything is restored
when the command returns, so tests (and notebooks) can call ``virtime.cli.main`` repeatedly.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
import warnings
from collections.abc import Iterator
from typing import Any, TextIO

from virtime.errors import VirtimeError, VirtimeWarning

__all__ = ["Terminated", "configure_logging", "console_session", "error_line",
           "exit_code_for_interrupt", "one_line"]

# Categories a user of the command line has no use for (they concern code, not data).
_QUIET_CATEGORIES = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)


class Terminated(KeyboardInterrupt):
    """The process received a termination signal (SIGTERM); handled like Ctrl-C.

    A ``KeyboardInterrupt`` so every ``except KeyboardInterrupt`` / ``finally`` that makes an
    interrupted run safe to resume runs for it too.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def exit_code_for_interrupt(exc: KeyboardInterrupt) -> int:
    """The shell's convention: 128 + the signal number (130 for Ctrl-C, 143 for SIGTERM)."""
    return 128 + (exc.signum if isinstance(exc, Terminated) else int(signal.SIGINT))


def one_line(text: str) -> str:
    """``text`` with its line breaks folded, so a message is never more than one line."""
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def error_line(exc: BaseException) -> str:
    """What the CLI prints for an error, always one line: for an OS error (read-only folder,
    full disk, port in use) the file and the problem, otherwise the message."""
    if isinstance(exc, OSError) and not isinstance(exc, VirtimeError) and exc.strerror:
        names = [str(n) for n in (exc.filename, getattr(exc, "filename2", None)) if n is not None]
        return one_line(f"{' -> '.join(names)}: {exc.strerror}" if names else exc.strerror)
    return one_line(str(exc)) or type(exc).__name__


def _package_of(filename: str) -> str:
    """The top-level package a warning's source file belongs to (``lifelines``, ``numpy``)."""
    parts = filename.replace("\\", "/").split("/")
    for marker in ("site-packages", "dist-packages"):
        if marker in parts:
            rest = parts[parts.index(marker) + 1:]
            if rest:
                return rest[0].removesuffix(".py")
    return parts[-1].removesuffix(".py") if parts else "python"


class _WarningPrinter:
    """``warnings.showwarning`` replacement: one line per distinct message, to stderr."""

    def __init__(self, command: str, stream: TextIO | None) -> None:
        self._prefix = f"virtime {command}: warning: " if command else "virtime: warning: "
        self._stream = stream
        self._seen: set[tuple[type, str]] = set()
        self._lock = threading.Lock()

    def __call__(self, message: Warning | str, category: type[Warning], filename: str,
                 lineno: int, file: TextIO | None = None, line: str | None = None) -> None:
        text = one_line(str(message))
        if not issubclass(category, VirtimeWarning) and not _is_virtime_file(filename):
            text = f"{text} (from {_package_of(filename)})"
        with self._lock:
            if (category, text) in self._seen:
                return
            self._seen.add((category, text))
        stream = file or self._stream or sys.stderr
        try:
            stream.write(self._prefix + text + "\n")
            stream.flush()
        except (OSError, ValueError):  # a closed or broken stream: nothing useful to do
            pass


def _is_virtime_file(filename: str) -> bool:
    parts = filename.replace("\\", "/").split("/")
    return "virtime" in parts


class _OneLineFormatter(logging.Formatter):
    """Log records as one line each: the exception's message, not its traceback."""

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            record = logging.makeLogRecord({**record.__dict__, "exc_info": None, "exc_text": None,
                                            "stack_info": None})
            text = one_line(super().format(record))
            return f"{text} ({type(exc).__name__}: {error_line(exc)})"
        record = logging.makeLogRecord({**record.__dict__, "stack_info": None})
        return one_line(super().format(record))


class _OnceFilter(logging.Filter):
    """Drops a log record whose level, logger and message were already shown this session (a
    check run twice must not print its warning twice)."""

    def __init__(self) -> None:
        super().__init__()
        self._seen: set[tuple[int, str, str]] = set()
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.levelno, record.name, record.getMessage())
        with self._lock:
            if key in self._seen:
                return False
            self._seen.add(key)
        return True


@contextlib.contextmanager
def _log_records_once() -> Iterator[None]:
    handlers = list(logging.getLogger().handlers)
    once = _OnceFilter()
    for handler in handlers:
        handler.addFilter(once)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(once)


def configure_logging(verbose: int) -> None:
    """Log to stderr at WARNING (INFO with ``-v``, DEBUG with ``-vv``); one line per record
    unless ``-vv`` (then tracebacks too). Leaves logging alone if the host already set it up."""
    level = logging.WARNING - 10 * min(verbose, 2)
    handler = logging.StreamHandler()
    fmt = "%(levelname)s %(name)s: %(message)s"
    handler.setFormatter(logging.Formatter(fmt) if verbose >= 2 else _OneLineFormatter(fmt))
    logging.basicConfig(level=level, handlers=[handler])
    # asyncio reports a task's failure a second time ("Task exception was never retrieved")
    # when a storage write fails (zarr's event loop); virtime has reported it already.
    if verbose < 2:
        logging.getLogger("asyncio").setLevel(logging.CRITICAL)


@contextlib.contextmanager
def console_session(command: str, verbose: int = 0,
                    stream: TextIO | None = None) -> Iterator[None]:
    """The CLI's presentation for one command (see the module docstring); restores everything.

    Warning filters are left as the user set them with ``-W`` / ``PYTHONWARNINGS``; otherwise
    every warning but the code-level ones (deprecations) is shown, once.
    """
    with contextlib.ExitStack() as stack:
        stack.enter_context(warnings.catch_warnings())
        if not sys.warnoptions:
            warnings.resetwarnings()
            warnings.simplefilter("always")
            for category in _QUIET_CATEGORIES:
                warnings.simplefilter("ignore", category)
        warnings.showwarning = _WarningPrinter(command, stream)
        stack.enter_context(_log_records_once())
        stack.enter_context(_interrupts())
        yield


@contextlib.contextmanager
def _interrupts() -> Iterator[None]:
    """Ctrl-C raises ``KeyboardInterrupt`` and SIGTERM :class:`Terminated` in the main thread,
    and from then on the command's log shows errors only: what libraries log while an
    interrupted run winds down (a cluster closing, tasks cancelled) is what stopping means, and
    the CLI says it in one line."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return
    handlers = list(logging.getLogger().handlers)
    levels = [h.level for h in handlers]

    def _stop(signum: int, frame: Any) -> None:
        for handler in handlers:
            handler.setLevel(max(handler.level, logging.ERROR))
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise Terminated(signum)

    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGINT, signal.SIGTERM)
                if signal.getsignal(sig) is not signal.SIG_IGN}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for handler, level in zip(handlers, levels):
            handler.setLevel(level)
