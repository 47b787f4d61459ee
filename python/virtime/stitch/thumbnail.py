"""Colourised RGB thumbnail: selected virtual mIF channels painted over the H&E.

Each channel has its registry colour ``col_c``; with ``p_c`` the probability (uint8 / 255) and
``H`` the H&E (both in [0, 1])::

    m   = max_c p_c                                   (how strongly anything is predicted)
    L   = Σ_c p_c col_c / Σ_c p_c                     (probability-weighted channel colour)
    out = (1 - alpha·m)·H + alpha·m·L                 (rounded to uint8)

so tissue with no predicted marker shows as plain H&E and a confident marker shows in its colour.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from virtime.channels import CHANNEL_NAMES, channel_index, get_channel
from virtime.errors import InputDataError, InvalidArgumentError
from virtime.stitch import omezarr
from virtime.stitch.atomic import atomic_path

__all__ = ["DEFAULT_THUMBNAIL_CHANNELS", "render_thumbnail", "thumbnail_from_zarr", "write_png"]

DEFAULT_THUMBNAIL_CHANNELS: tuple[str, ...] = ("DAPI", "CD8", "CK")


def _hex_to_rgb(color: str) -> NDArray[np.float64]:
    v = int(color.lstrip("#"), 16)
    return np.array([(v >> 16) & 255, (v >> 8) & 255, v & 255], dtype=np.float64)


def _resize_rgb(rgb: NDArray[np.uint8], shape_yx: tuple[int, int]) -> NDArray[np.uint8]:
    if rgb.shape[:2] == tuple(shape_yx):
        return rgb
    from PIL import Image

    img = Image.fromarray(np.ascontiguousarray(rgb), mode="RGB")
    return np.asarray(img.resize((shape_yx[1], shape_yx[0]), Image.Resampling.BILINEAR))


def render_thumbnail(
    he_rgb: NDArray[np.uint8],
    probs: NDArray[np.uint8],
    channels: Sequence[str] = DEFAULT_THUMBNAIL_CHANNELS,
    alpha: float = 0.7,
) -> NDArray[np.uint8]:
    """Blend ``channels`` of ``probs`` over the H&E; returns ``(h, w, 3)`` uint8 at ``probs``' size.

    Parameters
    ----------
    he_rgb
        ``(H, W, 3)`` uint8 H&E, any size (resized bilinearly to the probability grid).
    probs
        ``(C, h, w)`` uint8 probability x 255: all 23 channels in checkpoint order, or exactly the
        ``channels`` requested, in that order.
    channels
        Channel names to show, coloured as in :mod:`virtime.channels`.
    alpha
        Maximum opacity of the overlay, in [0, 1].
    """
    he_rgb = np.asarray(he_rgb)
    probs = np.asarray(probs)
    if he_rgb.ndim != 3 or he_rgb.shape[2] != 3 or he_rgb.dtype != np.uint8:
        raise InvalidArgumentError(
            f"H&E must be (H, W, 3) uint8, got {he_rgb.shape} {he_rgb.dtype}"
        )
    if probs.ndim != 3 or probs.dtype != np.uint8:
        raise InvalidArgumentError(
            f"probs must be (C, h, w) uint8, got {probs.shape} {probs.dtype}"
        )
    if not 0.0 <= alpha <= 1.0:
        raise InvalidArgumentError(f"alpha must be in [0, 1], got {alpha}")
    if not channels:
        raise InvalidArgumentError("at least one channel is needed for a thumbnail")
    if probs.shape[0] == len(channels):
        sel = probs
    elif probs.shape[0] == len(CHANNEL_NAMES):
        sel = probs[[channel_index(c) for c in channels]]
    else:
        raise InvalidArgumentError(
            f"probs has {probs.shape[0]} channels; expected {len(CHANNEL_NAMES)} or {len(channels)}"
        )
    colors = np.stack([_hex_to_rgb(get_channel(c).color) for c in channels])  # (k, 3)
    p = sel.astype(np.float64) / 255.0
    h = _resize_rgb(he_rgb, p.shape[1:]).astype(np.float64)  # colours stay in 0..255 units
    total = p.sum(axis=0)
    mix = np.einsum("khw,kc->hwc", p, colors)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_col = np.where(total[..., None] > 0, mix / total[..., None], 0.0)
    a = alpha * p.max(axis=0)[..., None]
    out = (1.0 - a) * h + a * mean_col
    return np.floor(np.clip(out, 0.0, 255.0) + 0.5).astype(np.uint8)


def write_png(path: str | os.PathLike[str], rgb: NDArray[np.uint8]) -> Path:
    """Write an RGB uint8 image as PNG, atomically."""
    from PIL import Image

    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise InvalidArgumentError(
            f"{path}: PNG needs (h, w, 3) uint8, got {rgb.shape} {rgb.dtype}"
        )
    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(rgb), mode="RGB").save(tmp, format="PNG")
    return Path(path)


def thumbnail_from_zarr(
    zarr_path: str | os.PathLike[str],
    he_rgb: NDArray[np.uint8],
    channels: Sequence[str] = DEFAULT_THUMBNAIL_CHANNELS,
    *,
    alpha: float = 0.7,
    max_size: int = 2048,
    png_path: str | os.PathLike[str] | None = None,
) -> NDArray[np.uint8]:
    """Thumbnail from the finest pyramid level whose longer side is ``<= max_size``.

    Reads only the selected channels of that level; writes ``png_path`` when given.
    """
    group = omezarr.open_ome_zarr(zarr_path)
    names = omezarr.read_channel_names(group)
    try:
        idx = [names.index(c) for c in channels]
    except ValueError:
        missing = [c for c in channels if c not in names]
        raise InputDataError(f"{zarr_path}: channels {missing} not in the image") from None
    paths = [d["path"] for d in group.attrs["multiscales"][0]["datasets"]]
    arr: Any = group[paths[-1]]
    for p in paths:
        if max(group[p].shape[1:]) <= max_size:
            arr = group[p]
            break
    probs = np.stack([np.asarray(arr[i]) for i in idx])
    rgb = render_thumbnail(he_rgb, probs, channels, alpha)
    if png_path is not None:
        write_png(png_path, rgb)
    return rgb
