"""Exception hierarchy of virtime.

Every error derives from :class:`VirtimeError` so callers can catch the package's errors in one
place, and, where natural, from a builtin too (``SlideFormatError`` is a ``ValueError``) so generic
code keeps working. The C++ core raises these same classes (mapped in the binding), and the CLI
turns any of them into one line on stderr with a non-zero exit.
"""

from __future__ import annotations

__all__ = [
    "VirtimeError",
    "SlideNotFoundError",
    "SlideFormatError",
    "SlideReadError",
    "SlideClosedError",
    "MissingMppError",
    "InvalidMppError",
    "SlideTooSmallError",
    "OpenSlideLibraryError",
    "InvalidArgumentError",
    "CudaError",
    "BatcherError",
    "CheckpointError",
    "ModelMismatchError",
    "InputDataError",
    "BackendUnavailableError",
    "SlideIdError",
    "OutputLockedError",
    "OutputError",
    "VirtimeWarning",
    "StatisticalWarning",
    "NoTissueWarning",
]


class VirtimeError(Exception):
    """Base class of every error virtime raises on purpose."""


class SlideNotFoundError(VirtimeError, FileNotFoundError):
    """The slide path does not exist."""


class SlideFormatError(VirtimeError, ValueError):
    """The file exists but is not a slide OpenSlide can open."""


class SlideReadError(VirtimeError, OSError):
    """Reading pixels failed (truncated or corrupt file); OpenSlide's error state is sticky."""


class SlideClosedError(VirtimeError, ValueError):
    """The slide was closed (``Slide.close()`` or the end of its ``with`` block) and is used again;
    a ``ValueError``, as reading a closed file is."""


class MissingMppError(VirtimeError, ValueError):
    """The slide carries no microns-per-pixel metadata and none was given."""


class InvalidMppError(VirtimeError, ValueError):
    """An mpp value is absurd (e.g. a resolution tag in the wrong unit)."""


class SlideTooSmallError(VirtimeError, ValueError):
    """The slide is smaller than one model tile at the requested resolution."""


class OpenSlideLibraryError(VirtimeError, ImportError):
    """The OpenSlide shared library (from openslide-bin) could not be loaded."""


class InvalidArgumentError(VirtimeError, ValueError):
    """A parameter is out of its valid range."""


class CudaError(VirtimeError, RuntimeError):
    """A CUDA call failed, or CUDA support was not compiled in."""


class BatcherError(VirtimeError, RuntimeError):
    """A batcher worker failed on something other than reading the slide: a bug (an invalid
    argument inside the core) or exhausted memory. Unlike an unreadable tile, which is recorded and
    skipped, this stops the run, so a slide is never finished as done over a bug."""


class CheckpointError(VirtimeError, ValueError):
    """A weights file is missing, corrupt, unsafe, or does not match any known architecture."""


class ModelMismatchError(VirtimeError, ValueError):
    """A model's channels, resolution or window do not match what was requested."""


class InputDataError(VirtimeError, ValueError):
    """A table or array given by the user fails validation (missing columns, NaN, bad codes)."""


class BackendUnavailableError(VirtimeError, RuntimeError):
    """An inference backend was requested but its library or device is not available."""


class SlideIdError(VirtimeError, ValueError):
    """A slide id is unusable (empty, hidden, a path) or shared by two slides, or an output
    folder belongs to a different slide file than the one given."""


class OutputLockedError(VirtimeError, RuntimeError):
    """Another run holds the lock of a slide's output folder."""


class OutputError(VirtimeError, OSError):
    """An output cannot be written: read-only folder, full disk, a file where a folder must be.

    ``str(exc)`` is ``"<path>: <problem>"``; ``errno`` is kept from the OS error.
    """

    @classmethod
    def from_os_error(cls, exc: OSError, path: object = None, *,
                      name_target: bool = False) -> OutputError:
        """Wrap ``exc``, naming its file (or ``path`` when the OS did not say which, or always
        with ``name_target``: the file being written rather than its temporary name)."""
        where = path if name_target or exc.filename is None else exc.filename
        problem = exc.strerror or str(exc) or type(exc).__name__
        err = cls(f"{where}: {problem}" if where is not None else problem)
        err.errno = exc.errno
        return err


class VirtimeWarning(UserWarning):
    """Base class of every warning virtime issues on purpose (a caveat, not a failure).

    A ``UserWarning`` so generic filters keep working; its own class so a caller can silence or
    escalate virtime's warnings alone (``warnings.filterwarnings("error", category=...)``), and
    so the CLI can tell them from third-party warnings.
    """


class StatisticalWarning(VirtimeWarning):
    """A statistical caveat: a feature, group or column left out of an analysis, and why."""


class NoTissueWarning(VirtimeWarning, RuntimeWarning):
    """A slide or map without tissue: its features are NaN (a ``RuntimeWarning`` too, as a NaN
    result is)."""
