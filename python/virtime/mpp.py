"""The resolution of a slide scan, checked in one place.

Everything downstream (tissue detection, tiling at the model's µm/px, feature bin sizes) depends
on the slide's level-0 microns per pixel, and a resolution tag in the wrong unit (pixels per
centimetre read as per inch, say) is common in the wild. :data:`MPP_RANGE` is what a slide scan
plausibly has: 0.1 µm/px (beyond a 100x objective) to 2 µm/px (a 5x overview). Translation
refuses a metadata value outside it unless the user vouches for it (an explicit ``--mpp``) or
asks for it (``--allow-mpp``). Opening a slide refuses only values that are certainly wrong:
not a positive number, or more than :data:`OPEN_TOLERANCE` times outside the range (so
``virtime info`` still shows, and ``--allow-mpp`` still translates, an unusual scan).
:func:`check_mpp` is the one check both use.
"""

from __future__ import annotations

import math
import os

from virtime.errors import InvalidMppError

__all__ = ["MPP_RANGE", "OPEN_TOLERANCE", "check_mpp", "mpp_range_text"]

#: Plausible level-0 microns per pixel of a slide scan.
MPP_RANGE: tuple[float, float] = (0.1, 2.0)
#: How far outside :data:`MPP_RANGE` a slide's metadata may lie and still be opened (a factor).
OPEN_TOLERANCE = 25.0


def mpp_range_text(mpp_range: tuple[float, float] = MPP_RANGE) -> str:
    """``"0.1-2"``: the range as the messages and the CLI help write it."""
    return f"{mpp_range[0]:g}-{mpp_range[1]:g}"


def check_mpp(mpp: float, *, path: str | os.PathLike[str], source: str,
              mpp_range: tuple[float, float] | None = MPP_RANGE, tolerance: float = 1.0,
              advice: str = "pass the true value with --mpp") -> float:
    """``mpp`` as a float when it is a positive number inside ``mpp_range`` widened by
    ``tolerance`` (``mpp_range=None``: any positive number).

    Raises :class:`~virtime.errors.InvalidMppError` in one line naming ``path``, the value, where
    it came from (``source``) and what to do (``advice``).
    """
    try:
        value = float(mpp)
        shown = f"{value:g}"
    except (TypeError, ValueError):
        value, shown = math.nan, repr(mpp)
    if not (math.isfinite(value) and value > 0):
        raise InvalidMppError(f"{path}: mpp {shown} um/px {source} is not a positive number; "
                              f"{advice}")
    if mpp_range is not None:
        lo, hi = mpp_range[0] / tolerance, mpp_range[1] * tolerance
        if not lo <= value <= hi:
            raise InvalidMppError(
                f"{path}: mpp {value:g} um/px {source} is outside the plausible range "
                f"{mpp_range_text((lo, hi))} um/px for a slide scan (a resolution tag in the "
                f"wrong unit?); {advice}")
    return value
