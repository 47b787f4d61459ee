"""ImageNet normalization of uint8 RGB tiles in float32 with two roundings (x·scale, then
+bias), the order of operations of the C++ packer and of the device path: a reference written
here."""

from __future__ import annotations

import numpy as np

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def packed_nchw(rgb: np.ndarray) -> np.ndarray:
    """``(n, h, w, 3)`` uint8 -> ``(n, 3, h, w)`` float32: ``(v / 255 - mean) / std``."""
    scale = np.float32(1) / (np.float32(255) * STD)
    bias = -MEAN / STD
    return np.ascontiguousarray((rgb.astype(np.float32) * scale + bias).transpose(0, 3, 1, 2))
