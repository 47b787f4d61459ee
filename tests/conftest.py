"""Shared fixtures: a fixed-seed rng, GPU skipping, and small synthetic slides made on the fly."""

from __future__ import annotations

import numpy as np
import pytest


def _cuda_device_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # torch missing or broken: no GPU tests
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _cuda_device_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture
def rng() -> np.random.Generator:
    """Fixed-seed generator: tests are reproducible, never seeded at random."""
    return np.random.default_rng(20251123)
