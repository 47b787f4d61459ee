"""Slide-feature references for the tests, computed with numpy from a slide folder's stored map."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import zarr

from virtime.channels import CHANNEL_NAMES


def densities(out: Path, threshold: float) -> dict[str, float]:
    """``<channel>.density`` from the stored uint8 map and tissue mask: the share of tissue
    pixels whose value exceeds ``255 · threshold`` (the documented positivity rule)."""
    level0 = np.asarray(zarr.open_group(str(out / "mif.ome.zarr"), mode="r")["0"][:])
    tissue = np.load(out / "tissue_mask.npy") != 0
    assert tissue.shape == level0.shape[1:] and tissue.any()
    v = level0[:, tissue].astype(np.float64)
    return {f"{name}.density": float((v[i] > 255.0 * threshold).mean())
            for i, name in enumerate(CHANNEL_NAMES)}
