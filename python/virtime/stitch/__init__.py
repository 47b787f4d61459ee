"""Seam-free stitching of model windows into a bounded-memory OME-Zarr canvas, and its exports.

``windows`` plans windows and blend weights, ``window_geometry`` weights, blends and pools a
tile's windows (numpy and torch backends), ``canvas`` accumulates them band by band into
``omezarr``; ``ometiff`` and ``thumbnail`` export the finished canvas; the atomic writers and the
run manifest that makes a killed run resumable live in :mod:`virtime.io` (re-exported here).
"""

from __future__ import annotations

from virtime.io import RunManifest, atomic_path, atomic_write_bytes, atomic_write_json
from virtime.stitch.canvas import StreamingCanvas, canvas_finished, canvas_shape
from virtime.stitch.ometiff import export_ome_tiff
from virtime.stitch.thumbnail import render_thumbnail, thumbnail_from_zarr, write_png
from virtime.stitch.window_geometry import WindowGeometry
from virtime.stitch.windows import (
    output_factor,
    plan_windows,
    pool_weighted,
    tile_stride,
    window_offsets,
    window_weight,
)

__all__ = [
    "RunManifest",
    "StreamingCanvas",
    "WindowGeometry",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_json",
    "canvas_finished",
    "canvas_shape",
    "export_ome_tiff",
    "output_factor",
    "plan_windows",
    "pool_weighted",
    "render_thumbnail",
    "thumbnail_from_zarr",
    "tile_stride",
    "window_offsets",
    "window_weight",
    "write_png",
]
