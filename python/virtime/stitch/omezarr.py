"""OME-Zarr (OME-NGFF 0.4) layout: pyramid arrays, 2x mean downsampling, multiscales/omero metadata.

Why 0.4 and not 0.5: 0.4 (Zarr format 2, metadata in ``.zattrs``) is what the viewers our users
open today read — napari (ome-zarr plugin), QuPath and Fiji through Bio-Formats, vizarr, OMERO
and neuroglancer; 0.5 (Zarr v3) is not yet read by Bio-Formats. Arrays are ``uint8``
(probability x 255), axes ``c, y, x``, chunks ``(1, chunk, chunk)`` (one channel per chunk, so a
viewer showing two channels reads two of 23 chunk files), "/" chunk-key separator as 0.4 requires,
Blosc-zstd compression.

Level ``k`` is level 0 downsampled by ``2**k`` (mean of each 2x2 block, rounded half up;
at an odd edge the block mean is over the pixels that exist). Levels are added until the image
fits in one chunk. Every level is built band by band from the one above, so memory stays
``O(width x chunk)`` whatever the slide size.

The reader (``read_ome_zarr``, ``verify_array``, ``VerifiedArray``) lives in
:mod:`virtime.io.omezarr`, with the other readers of a slide folder.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from virtime.channels import Channel
from virtime.errors import InputDataError
from virtime.io.omezarr import verify_array

__all__ = [
    "NGFF_VERSION",
    "build_level",
    "create_pyramid",
    "downsample_2x",
    "multiscales_metadata",
    "n_pyramid_levels",
    "omero_metadata",
    "open_ome_zarr",
    "pyramid_shapes",
    "read_channel_names",
    "writable_level",
    "write_ngff_metadata",
]

NGFF_VERSION = "0.4"


def n_pyramid_levels(shape_yx: tuple[int, int], chunk: int) -> int:
    """Number of levels: halve until both sides fit in one chunk (at least 1)."""
    h, w = shape_yx
    n = 1
    while max(h, w) > chunk:
        h, w = -(-h // 2), -(-w // 2)
        n += 1
    return n


def pyramid_shapes(shape_yx: tuple[int, int], n_levels: int) -> list[tuple[int, int]]:
    """``(h, w)`` of each level: ``ceil`` halving of the previous one."""
    shapes = [tuple(shape_yx)]
    for _ in range(n_levels - 1):
        h, w = shapes[-1]
        shapes.append((-(-h // 2), -(-w // 2)))
    return [(int(h), int(w)) for h, w in shapes]


def multiscales_metadata(n_levels: int, mpp: float, name: str) -> list[dict[str, Any]]:
    """NGFF 0.4 ``multiscales``: axes c/y/x (µm for space), one scale transform per level.

    Level ``k`` has pixel size ``mpp · 2**k`` µm; the channel axis has scale 1.
    """
    return [
        {
            "version": NGFF_VERSION,
            "name": name,
            "axes": [
                {"name": "c", "type": "channel"},
                {"name": "y", "type": "space", "unit": "micrometer"},
                {"name": "x", "type": "space", "unit": "micrometer"},
            ],
            "datasets": [
                {
                    "path": str(k),
                    "coordinateTransformations": [
                        {"type": "scale", "scale": [1.0, mpp * 2**k, mpp * 2**k]}
                    ],
                }
                for k in range(n_levels)
            ],
            "type": "mean",
            "metadata": {
                "description": "2x2 block mean of the level above, rounded half up",
                "method": "virtime.stitch.omezarr.downsample_2x",
            },
        }
    ]


def omero_metadata(channels: Sequence[Channel], name: str) -> dict[str, Any]:
    """NGFF ``omero`` block: per channel its label, colour (hex RRGGBB) and display window 0–255."""
    return {
        "name": name,
        "version": NGFF_VERSION,
        "rdefs": {"model": "color", "defaultZ": 0, "defaultT": 0},
        "channels": [
            {
                "label": ch.name,
                "color": ch.color.lstrip("#").upper(),
                "active": ch.role == "protein",
                "coefficient": 1.0,
                "family": "linear",
                "inverted": False,
                "window": {"start": 0.0, "end": 255.0, "min": 0.0, "max": 255.0},
            }
            for ch in channels
        ],
    }


def create_pyramid(
    path: str | os.PathLike[str], n_channels: int, shape_yx: tuple[int, int], chunk: int
) -> Any:
    """Create (overwrite) the Zarr-v2 group with empty ``uint8`` arrays ``0 .. n-1``; return it."""
    import zarr
    from numcodecs import Blosc
    from zarr.storage import LocalStore

    group = zarr.open_group(LocalStore(str(path)), mode="w", zarr_format=2)
    for k, (h, w) in enumerate(pyramid_shapes(shape_yx, n_pyramid_levels(shape_yx, chunk))):
        group.create_array(
            str(k),
            shape=(n_channels, h, w),
            chunks=(1, chunk, chunk),
            dtype="uint8",
            fill_value=0,
            compressors=Blosc(cname="zstd", clevel=5, shuffle=Blosc.NOSHUFFLE),
            chunk_key_encoding={"name": "v2", "separator": "/"},
        )
    return group


def open_ome_zarr(path: str | os.PathLike[str], mode: Literal["r", "r+"] = "r") -> Any:
    """Open an OME-Zarr group written here; a missing or foreign path raises InputDataError."""
    import zarr
    from zarr.storage import LocalStore

    p = Path(path)
    if not (p / ".zgroup").is_file():
        raise InputDataError(f"{p}: not a Zarr v2 group (no .zgroup)")
    return zarr.open_group(LocalStore(str(p), read_only=(mode == "r")), mode=mode, zarr_format=2)


def downsample_2x(block: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """2x2 mean of ``(C, h, w)`` uint8, rounded half up; odd edges average the pixels present.

    Edge replication makes the block at an odd edge the mean of its existing pixels.
    """
    h, w = block.shape[1:]
    if h % 2 or w % 2:
        block = np.pad(block, ((0, 0), (0, h % 2), (0, w % 2)), mode="edge")
    s = block.astype(np.uint16)
    total = s[:, 0::2, 0::2] + s[:, 1::2, 0::2] + s[:, 0::2, 1::2] + s[:, 1::2, 1::2]
    return ((total + 2) // 4).astype(np.uint8)


def build_level(src: Any, dst: Any, band: int) -> None:
    """Fill ``dst`` (level k+1) from ``src`` (level k) ``band`` output rows at a time."""
    h = dst.shape[1]
    for y0 in range(0, h, band):
        y1 = min(h, y0 + band)
        dst[:, y0:y1, :] = downsample_2x(np.asarray(src[:, 2 * y0 : 2 * y1, :]))


def write_ngff_metadata(
    group: Any,
    *,
    n_levels: int,
    channels: Sequence[Channel],
    mpp: float,
    name: str,
    extra: dict[str, Any] | None = None,
) -> None:
    """Write ``multiscales`` and ``omero`` (plus an optional ``virtime`` block) to ``.zattrs``."""
    attrs: dict[str, Any] = {
        "multiscales": multiscales_metadata(n_levels, mpp, name),
        "omero": omero_metadata(channels, name),
    }
    if extra:
        attrs["virtime"] = extra
    group.attrs.update(attrs)


def read_channel_names(group: Any) -> list[str]:
    """Channel labels from the ``omero`` block of an OME-Zarr group."""
    try:
        return [c["label"] for c in group.attrs["omero"]["channels"]]
    except (KeyError, TypeError) as exc:
        raise InputDataError(f"{group.store}: no omero channel labels in metadata") from exc


def writable_level(group: Any, level: int) -> Any:
    """Level ``level`` of ``group`` for writing, with every chunk stored, empty ones too.

    zarr leaves an all-``fill_value`` chunk out by default, and then a missing chunk (deleted,
    lost in a copy) cannot be told from background; with every chunk written,
    :func:`verify_array` can demand each expected chunk file.
    """
    return group[str(level)].with_config({"write_empty_chunks": True})
