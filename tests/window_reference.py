"""The window blending ramp written independently of ``virtime.stitch.windows``, for the tests
that check window weights, blending and pooling against it.

Importable from any test because tests/conftest.py puts this folder on ``sys.path``.
"""

from __future__ import annotations

import numpy as np


def ramp_weight(size: int, overlap: int) -> np.ndarray:
    """Separable sin² ramp of ``overlap`` pixels at each edge of a ``size`` window (float32)."""
    r = np.ones(size)
    if overlap:
        t = (np.arange(overlap) + 0.5) / overlap
        r[:overlap] = np.sin(np.pi * t / 2) ** 2
        r[size - overlap :] = np.minimum(r[size - overlap :], r[:overlap][::-1])
    return np.outer(r, r).astype(np.float32)
