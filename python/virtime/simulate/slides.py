"""Synthetic whole-slide images that OpenSlide opens, so tests and the demo never need real slides.

Slides are pyramidal tiled TIFFs in two flavours: a generic tiled TIFF (resolution tags give the
mpp, or none at all to exercise the missing-mpp path) and an Aperio-style SVS whose ImageDescription
carries ``MPP =`` and ``AppMag =`` as scanners write them. The H&E look comes from Beer-Lambert
absorption of hematoxylin and eosin (Ruifrok & Johnston's stain vectors) over white glass.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import numpy as np
from scipy import ndimage

from virtime.io import atomic_path

__all__ = [
    "HEMATOXYLIN_OD",
    "EOSIN_OD",
    "render_he",
    "synthetic_he",
    "write_slide",
    "make_slide",
    "write_flat_slide",
]

#: Optical density per unit concentration (R, G, B), Ruifrok & Johnston 2001.
HEMATOXYLIN_OD = np.array([0.650, 0.704, 0.286])
EOSIN_OD = np.array([0.072, 0.990, 0.105])

SlideFormat = Literal["aperio", "generic", "generic-no-mpp"]


def render_he(
    hematoxylin: np.ndarray,
    eosin: np.ndarray,
    h_od: np.ndarray = HEMATOXYLIN_OD,
    e_od: np.ndarray = EOSIN_OD,
    background: float = 245.0,
) -> np.ndarray:
    """RGB uint8 from per-pixel stain concentrations: I = I0 * exp(-(cH*OD_H + cE*OD_E)).

    Concentrations are quantized to 1/128 and looked up in a precomputed table: the rounding this
    adds is far below one grey level per channel, and the table makes large slides cheap.
    """
    step = 1.0 / 128.0
    h_idx = np.clip(np.rint(hematoxylin * 128.0), 0, 511).astype(np.int32)
    e_idx = np.clip(np.rint(eosin * 128.0), 0, 511).astype(np.int32)
    levels = np.arange(512, dtype=np.float64) * step
    od = levels[:, None, None] * h_od + levels[None, :, None] * e_od  # (512, 512, 3)
    table = np.clip(background * np.exp(-od), 0, 255).round().astype(np.uint8)
    return table[h_idx, e_idx]


def _blobs(shape: tuple[int, int], n: int, radius_px: float, rng: np.random.Generator) -> np.ndarray:
    """Soft round blobs: Gaussian-blurred random points, scaled so a blob peaks near 1."""
    points = np.zeros(shape, dtype=np.float32)
    ys = rng.integers(0, shape[0], n)
    xs = rng.integers(0, shape[1], n)
    points[ys, xs] = 1.0
    sigma = max(radius_px / 1.5, 0.5)
    blurred = ndimage.gaussian_filter(points, sigma)
    return blurred * (2 * np.pi * sigma**2)


def synthetic_he(
    width: int,
    height: int,
    mpp: float = 0.5,
    *,
    rng: np.random.Generator,
    tissue_regions: int = 3,
    nuclei_per_mm2: float = 3000.0,
    nucleus_radius_um: float = 3.5,
) -> tuple[np.ndarray, np.ndarray]:
    """An H&E-like image with tissue islands on glass; returns (rgb, tissue_mask).

    Tissue islands are smoothed random ellipses (about 40% of the area with the defaults);
    eosin fills them with texture and hematoxylin-dense nuclei are scattered inside.
    """
    # Island layout on a coarse grid, then upsampled: cheap at any slide size.
    coarse = (max(height // 32, 8), max(width // 32, 8))
    yy, xx = np.mgrid[0 : coarse[0], 0 : coarse[1]]
    field = np.zeros(coarse, dtype=np.float32)
    for _ in range(tissue_regions):
        cy, cx = rng.uniform(0.2, 0.8) * coarse[0], rng.uniform(0.2, 0.8) * coarse[1]
        ry, rx = rng.uniform(0.12, 0.28) * coarse[0], rng.uniform(0.12, 0.28) * coarse[1]
        field = np.maximum(field, 1.0 - ((yy - cy) / ry) ** 2 - ((xx - cx) / rx) ** 2)
    field = ndimage.gaussian_filter(field, 1.0)
    zoom = (height / coarse[0], width / coarse[1])
    tissue_soft = ndimage.zoom(field, zoom, order=1)[:height, :width]
    tissue = tissue_soft > 0.0
    texture = ndimage.gaussian_filter(rng.standard_normal((height, width), dtype=np.float32), 2.0)
    eosin = np.where(tissue, 0.35 + 0.12 * texture / (texture.std() + 1e-6), 0.0).clip(0, None)
    area_mm2 = width * height * (mpp / 1000.0) ** 2
    n_nuclei = int(nuclei_per_mm2 * area_mm2)
    nuclei = _blobs((height, width), max(n_nuclei, 1), nucleus_radius_um / mpp, rng)
    hema = np.where(tissue, 0.08 + 1.1 * np.clip(nuclei, 0, 1.2), 0.0)
    rgb = render_he(hema, eosin)
    noise = rng.integers(-2, 3, rgb.shape, dtype=np.int16)  # sensor noise of a couple of levels
    rgb = np.clip(rgb + noise, 0, 255).astype(np.uint8)
    return rgb, tissue


def _downsample(rgb: np.ndarray, factor: int) -> np.ndarray:
    h, w = rgb.shape[0] // factor * factor, rgb.shape[1] // factor * factor
    view = rgb[:h, :w].reshape(h // factor, factor, w // factor, factor, 3).astype(np.float32)
    return view.mean(axis=(1, 3)).round().astype(np.uint8)


def write_slide(
    path: str | os.PathLike[str],
    rgb: np.ndarray,
    mpp: float | None,
    *,
    fmt: SlideFormat = "aperio",
    tile: int = 256,
    level_factor: int = 4,
    min_level_size: int = 512,
    objective_power: int | None = None,
) -> Path:
    """Writes ``rgb`` (level 0) as a pyramidal tiled TIFF; returns the path.

    ``fmt="aperio"`` puts ``MPP`` and ``AppMag`` in the description (``.svs``); ``"generic"``
    stores the mpp in TIFF resolution tags; ``"generic-no-mpp"`` stores none. Written to a
    temporary name and renamed, so a reader never sees half a slide.
    """
    import tifffile

    path = Path(path)
    if fmt not in ("aperio", "generic", "generic-no-mpp"):
        raise ValueError(f"unknown slide format {fmt!r}")
    if fmt != "generic-no-mpp" and (mpp is None or not mpp > 0):
        raise ValueError(f"format {fmt!r} needs a positive mpp")
    levels = [np.ascontiguousarray(rgb, dtype=np.uint8)]
    while max(levels[-1].shape[:2]) // level_factor >= min_level_size:
        levels.append(_downsample(levels[-1], level_factor))
    if objective_power is None and mpp:
        objective_power = 40 if mpp < 0.375 else 20
    h0, w0 = rgb.shape[:2]
    with atomic_path(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=rgb.nbytes > 2**31) as tif:
        for i, level in enumerate(levels):
            kwargs: dict = dict(
                tile=(tile, tile), compression="zlib", compressionargs={"level": 1},
                photometric="rgb", metadata=None,
                subfiletype=0 if i == 0 else 1,
            )
            if fmt == "aperio":
                if i == 0:
                    kwargs["description"] = (
                        f"Aperio Image Library v12.0.0\n{w0}x{h0} [0,0 {w0}x{h0}] ({tile}x{tile}) "
                        f"virtime-simulated|AppMag = {objective_power}|MPP = {mpp:.4f}"
                    )
                else:
                    kwargs["description"] = (
                        f"Aperio Image Library v12.0.0\n{w0}x{h0} -> {level.shape[1]}x{level.shape[0]}"
                    )
            elif fmt == "generic" and mpp:
                res = 1e4 / (mpp * (level_factor**i))
                kwargs.update(resolution=(res, res), resolutionunit="CENTIMETER")
            tif.write(level, **kwargs)
    return path


def make_slide(
    path: str | os.PathLike[str],
    width: int = 2048,
    height: int = 2048,
    mpp: float = 0.5,
    *,
    fmt: SlideFormat = "aperio",
    seed: int = 0,
    **he_kwargs: object,
) -> Path:
    """Renders a synthetic H&E slide and writes it; the one-call fixture for tests and demos."""
    rng = np.random.default_rng(seed)
    rgb, _ = synthetic_he(width, height, mpp, rng=rng, **he_kwargs)  # type: ignore[arg-type]
    return write_slide(path, rgb, None if fmt == "generic-no-mpp" else mpp, fmt=fmt)


def write_flat_slide(
    path: str | os.PathLike[str], tile_colours: np.ndarray, mpp: float, *, tile: int = 256
) -> Path:
    """Writes a **single-level** tiled TIFF whose tile ``(i, j)`` is ``tile_colours[i, j]``.

    ``tile_colours`` is ``(rows, cols, 3)`` uint8; the slide is ``cols * tile`` by ``rows * tile``
    pixels with the mpp in resolution tags. Tiles are streamed and compress to almost nothing
    (a 24576² slide, 1.7 GiB of pixels, is about 8 MB on disk): the fixture for checking that
    memory does not grow with a flat slide's pixel count (the image is known exactly).
    """
    import tifffile

    path = Path(path)
    colours = np.asarray(tile_colours, dtype=np.uint8)
    if colours.ndim != 3 or colours.shape[2] != 3:
        raise ValueError(f"tile_colours must be (rows, cols, 3), got {colours.shape}")
    rows, cols = colours.shape[:2]
    block = np.empty((tile, tile, 3), np.uint8)

    def tiles():
        for i in range(rows):
            for j in range(cols):
                block[:] = colours[i, j]
                yield block

    res = 1e4 / mpp
    shape = (rows * tile, cols * tile, 3)
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, tiles(), shape=shape, dtype=np.uint8, tile=(tile, tile),
                         compression="zlib", compressionargs={"level": 1}, photometric="rgb",
                         metadata=None, resolution=(res, res), resolutionunit="CENTIMETER",
                         bigtiff=rows * cols * tile * tile * 3 > 2**31)
    return path
