"""Pyramidal OME-TIFF export of a finished OME-Zarr canvas, for viewers that want one file.

The base level is the main IFD series (one page per channel, axes ``CYX``), each coarser
level goes to SubIFDs (reduced-resolution images, as QuPath and Bio-Formats read them). Channel
names and colours go into the OME-XML. Data are streamed from the Zarr one strip of tiles at a
time, so memory is ``O(width x tile)`` whatever the slide size; the file is written under a
temporary name and renamed when complete.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from virtime.errors import InputDataError
from virtime.stitch import omezarr
from virtime.io import atomic_path

__all__ = ["export_ome_tiff", "ome_color"]


def ome_color(hex_rgb: str) -> int:
    """OME-XML ``Color``: RGBA packed in a signed 32-bit int (opaque alpha)."""
    rgb = int(hex_rgb.lstrip("#"), 16)
    value = (rgb << 8) | 0xFF
    return value - (1 << 32) if value >= 1 << 31 else value


def _tiles(array: Any, tile: int) -> Iterator[NDArray[np.uint8]]:
    """Tiles of every channel page, row-major, reading one strip of ``tile`` rows at a time."""
    c, h, w = array.shape
    for ci in range(c):
        for y in range(0, h, tile):
            strip = np.asarray(array[ci, y : y + tile, :])
            for x in range(0, w, tile):
                yield strip[:, x : x + tile]


def export_ome_tiff(
    zarr_path: str | os.PathLike[str],
    tiff_path: str | os.PathLike[str],
    *,
    tile: int = 256,
    compression: str = "zlib",
) -> Path:
    """Write the OME-Zarr canvas at ``zarr_path`` as a pyramidal OME-TIFF at ``tiff_path``.

    Parameters
    ----------
    zarr_path
        A canvas written by :class:`~virtime.stitch.canvas.StreamingCanvas` (NGFF 0.4).
    tiff_path
        Output file (``.ome.tif``); BigTIFF, tiles ``tile x tile``, ``compression`` codec.
    """
    import tifffile

    group = omezarr.open_ome_zarr(zarr_path)
    try:
        ms = group.attrs["multiscales"][0]
        paths = [d["path"] for d in ms["datasets"]]
        mpp = float(ms["datasets"][0]["coordinateTransformations"][0]["scale"][-1])
        omero_channels = group.attrs["omero"]["channels"]
    except (KeyError, IndexError, TypeError) as exc:
        raise InputDataError(f"{zarr_path}: missing NGFF multiscales/omero metadata") from exc
    levels = [group[p] for p in paths]
    base = levels[0]
    if len(omero_channels) != base.shape[0]:
        raise InputDataError(
            f"{zarr_path}: {len(omero_channels)} channel labels for {base.shape[0]} channels"
        )
    metadata = {
        "axes": "CYX",
        "Name": str(ms.get("name", "virtual mIF")),
        "PhysicalSizeX": mpp,
        "PhysicalSizeXUnit": "µm",
        "PhysicalSizeY": mpp,
        "PhysicalSizeYUnit": "µm",
        "Channel": {
            "Name": [c["label"] for c in omero_channels],
            "Color": [ome_color(c["color"]) for c in omero_channels],
        },
    }
    options: dict[str, Any] = {
        "tile": (tile, tile),
        "compression": compression,
        "photometric": "minisblack",
        "dtype": np.uint8,
        "resolutionunit": "CENTIMETER",
    }
    with atomic_path(tiff_path) as tmp, tifffile.TiffWriter(tmp, bigtiff=True, ome=True) as tif:
        tif.write(
            _tiles(base, tile),
            shape=base.shape,
            subifds=len(levels) - 1,
            resolution=(1e4 / mpp, 1e4 / mpp),
            metadata=metadata,
            **options,
        )
        for k, arr in enumerate(levels[1:], start=1):
            px = mpp * 2**k
            tif.write(
                _tiles(arr, tile),
                shape=arr.shape,
                subfiletype=1,
                resolution=(1e4 / px, 1e4 / px),
                metadata=None,
                **options,
            )
    return Path(tiff_path)
