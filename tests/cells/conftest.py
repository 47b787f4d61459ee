"""Fixtures: small simulated regions with ground-truth mIF and the simulator's own cells."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def gt_region():
    """A 200 x 200 µm region at 0.5 µm/px: (targets as float32 probabilities, cell table)."""
    from virtime.simulate.tissue import render_tissue

    _, targets, cells = render_tissue((400, 400), mpp=0.5, rng=np.random.default_rng(7))
    return targets.astype(np.float32), cells


def blob_map(shape: tuple[int, int], nuclei: list[tuple[float, float, float]],
             markers: dict[str, list[int]] | None = None) -> np.ndarray:
    """A (23, H, W) map with round nuclei (y, x, r) in DAPI, markers on nucleus + 2 px."""
    from virtime.channels import CHANNEL_NAMES

    probs = np.zeros((23, *shape), np.float32)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for k, (y, x, r) in enumerate(nuclei):
        d = np.hypot(yy - y, xx - x)
        probs[0][d <= r] = 1.0
        for ch, owners in (markers or {}).items():
            if k in owners:
                probs[CHANNEL_NAMES.index(ch)][d <= r + 2] = 1.0
    return probs
