"""Whole-slide images opened through the C++ core (OpenSlide underneath).

A :class:`Slide` exposes the pyramid, the physical resolution (microns per pixel) and RGB region
reads. Resolution is validated here because everything downstream (tissue detection, tiling at
the model's mpp, feature bin sizes) depends on it: a missing mpp is an error unless the caller
gives one, and an absurd one is refused rather than silently used.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from virtime._openslide import ensure_openslide
from virtime.errors import MissingMppError, SlideClosedError, SlideFormatError
from virtime.mpp import MPP_RANGE, OPEN_TOLERANCE, check_mpp

__all__ = ["Slide", "open_slide"]

log = logging.getLogger(__name__)


class Slide:
    """An open whole-slide image.

    Parameters
    ----------
    path
        Slide file (any format OpenSlide reads: SVS, NDPI, MRXS, generic tiled TIFF ...).
    mpp
        Level-0 microns per pixel to use instead of the file's metadata (for files without it).

    :meth:`close` releases the OpenSlide handle (a batcher still reading keeps its own
    reference until it ends); ``with open_slide(path) as slide:`` closes it at the end of the
    block. A closed slide raises :class:`~virtime.errors.SlideClosedError` when used.
    """

    def __init__(self, path: str | os.PathLike[str], mpp: float | None = None) -> None:
        ensure_openslide()
        from virtime import _core

        self.path = Path(path)
        self._handle: Any = None
        try:
            self._handle = _core.Slide(str(self.path))
        except SlideFormatError:
            reason = _damage_reason(self.path)
            if reason is None:
                raise
            raise SlideFormatError(f"{self.path}: {reason}") from None
        self._mpp_override = None if mpp is None else _opened_mpp(mpp, self.path, "given")

    # -- lifetime ------------------------------------------------------------------------------
    @property
    def _core(self) -> Any:
        """The compiled slide (``virtime._core.Slide``) the readers use."""
        if self._handle is None:
            raise SlideClosedError(f"{self.path}: the slide is closed (Slide.close() or the end "
                                   f"of its with block); open it again to read it")
        return self._handle

    @property
    def closed(self) -> bool:
        return self._handle is None

    def close(self) -> None:
        """Releases the OpenSlide handle; closing twice is harmless."""
        self._handle = None

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- pyramid -------------------------------------------------------------------------------
    @property
    def vendor(self) -> str:
        return str(self._core.vendor)

    @property
    def level_count(self) -> int:
        return int(self._core.level_count)

    @property
    def level_dimensions(self) -> list[tuple[int, int]]:
        """(width, height) per level."""
        return [tuple(d) for d in self._core.level_dimensions]  # type: ignore[misc]

    @property
    def dimensions(self) -> tuple[int, int]:
        """Level-0 (width, height)."""
        return self.level_dimensions[0]

    @property
    def level_downsamples(self) -> list[float]:
        return list(self._core.level_downsamples)

    @property
    def properties(self) -> dict[str, str]:
        return dict(self._core.properties)

    @property
    def objective_power(self) -> float | None:
        return self._core.objective_power

    # -- resolution ----------------------------------------------------------------------------
    @property
    def mpp_xy(self) -> tuple[float, float] | None:
        """(mpp-x, mpp-y) from the file's metadata, or None when absent."""
        x, y = self._core.mpp_x, self._core.mpp_y
        if x is None or y is None:
            return None
        return (float(x), float(y))

    @property
    def mpp_given(self) -> bool:
        """Whether the mpp was given when opening (the caller's word) rather than read."""
        return self._mpp_override is not None

    @property
    def has_mpp(self) -> bool:
        return self._mpp_override is not None or self.mpp_xy is not None

    @property
    def mpp(self) -> float:
        """Level-0 microns per pixel (the override, else the metadata's x value).

        Raises MissingMppError when neither exists, InvalidMppError when the metadata is absurd.
        """
        if self._mpp_override is not None:
            return self._mpp_override
        xy = self.mpp_xy
        if xy is None:
            raise MissingMppError(
                f"{self.path}: no microns-per-pixel metadata (openslide.mpp-x/y); "
                "pass the scan resolution with --mpp (e.g. --mpp 0.25 for a 40x scan)"
            )
        mpp = _opened_mpp(xy[0], self.path, "in the metadata")
        if abs(xy[0] - xy[1]) > 0.02 * xy[0]:
            log.warning("%s: non-square pixels (mpp-x %.4f, mpp-y %.4f); using mpp-x", self.path, *xy)
        return mpp

    def level_mpp(self, level: int) -> float:
        return self.mpp * self.level_downsamples[level]

    # -- pixels --------------------------------------------------------------------------------
    def read_region(self, x: int, y: int, level: int, width: int, height: int) -> np.ndarray:
        """RGB uint8 (height, width, 3) at `level`, top-left (x, y) in level-0 pixels.

        Areas outside the scanned region or the slide are white (transparent composited on white).
        """
        return self._core.read_region(int(x), int(y), int(level), int(width), int(height))

    def __repr__(self) -> str:
        if self.closed:
            return f"Slide({str(self.path)!r}, closed)"
        return f"Slide({str(self.path)!r}, levels={self.level_count}, dims={self.dimensions})"


def open_slide(path: str | os.PathLike[str], mpp: float | None = None) -> Slide:
    """Opens a slide; see :class:`Slide`. ``with open_slide(path) as slide:`` closes it after the
    block."""
    return Slide(path, mpp=mpp)


def _opened_mpp(mpp: float, path: Path, where: str) -> float:
    """An mpp a slide may be opened with: :func:`virtime.mpp.check_mpp` with the open tolerance
    (translation then holds metadata to the plausible range itself)."""
    return check_mpp(mpp, path=path, source=where, mpp_range=MPP_RANGE, tolerance=OPEN_TOLERANCE,
                     advice="pass the right value with --mpp")


_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def _damage_reason(path: Path) -> str | None:
    """Why a TIFF-based slide OpenSlide refused is damaged, or None when it is not a TIFF.

    OpenSlide reports a truncated SVS/TIFF as "unsupported format", which sends users looking
    for a converter when the file is an incomplete copy. A TIFF header with image data that ends
    past the end of the file is a truncation; a TIFF that does not parse is corrupt.
    """
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError:
        return None
    if head not in _TIFF_MAGIC:
        return None
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            for page in tif.pages:
                ends = [int(o) + int(n) for o, n in zip(page.dataoffsets, page.databytecounts)]
                if ends and max(ends) > size:
                    return (f"truncated: a TIFF of {size:,} bytes whose image data runs to byte "
                            f"{max(ends):,} (an incomplete copy or download?)")
    except Exception as exc:  # noqa: BLE001 - any parse failure of a TIFF header means damage
        return f"a TIFF file that cannot be parsed: truncated or corrupt ({exc})"
    return None
