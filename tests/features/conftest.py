"""Shared synthetic maps for the feature tests."""

from __future__ import annotations

import numpy as np
import pytest


def smooth_map(rng: np.random.Generator, C: int, H: int, W: int, dtype=np.uint8) -> np.ndarray:
    """Blobby probability maps (runs of equal masks, realistic densities) plus pixel noise."""
    coarse = rng.random((C, H // 8 + 2, W // 8 + 2))
    up = np.repeat(np.repeat(coarse, 8, axis=1), 8, axis=2)[:, :H, :W]
    p = np.clip(0.7 * up + 0.3 * rng.random((C, H, W)), 0, 1)
    if dtype == np.uint8:
        return np.round(p * 255).astype(np.uint8)
    return p.astype(np.float32)


@pytest.fixture
def blobs(rng):
    def make(C, H, W, dtype=np.uint8):
        return smooth_map(rng, C, H, W, dtype)

    return make


def _load_reference():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).with_name("_reference.py")
    spec = importlib.util.spec_from_file_location("virtime_features_test_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_REF = _load_reference()


@pytest.fixture
def ref():
    """The plain-numpy reference module (tests/features/_reference.py)."""
    return _REF
