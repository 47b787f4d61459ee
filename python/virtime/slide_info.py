"""A slide's description (pyramid, resolution, tissue, tiling) as one dict, for ``virtime info``."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from virtime.slide import Slide
from virtime.tiling import TilingConfig, make_tile_grid
from virtime.tissue import detect_tissue

__all__ = ["describe_slide", "demo_slide_path"]


def describe_slide(
    path: str | os.PathLike[str], mpp: float | None = None, tiling: TilingConfig = TilingConfig()
) -> dict[str, Any]:
    """Levels, mpp, vendor, tissue fraction and the tile count at the given tiling."""
    slide = Slide(path, mpp=mpp)
    tissue = detect_tissue(slide)
    full = make_tile_grid(slide, TilingConfig(**{**tiling.__dict__, "min_tissue": 0.0}), None)
    grid = make_tile_grid(slide, tiling, tissue)
    return {
        "path": str(slide.path),
        "vendor": slide.vendor,
        "mpp": slide.mpp,
        "mpp_xy": slide.mpp_xy,
        "objective_power": slide.objective_power,
        "levels": [
            {"level": i, "width": w, "height": h, "downsample": ds, "mpp": slide.mpp * ds}
            for i, ((w, h), ds) in enumerate(zip(slide.level_dimensions, slide.level_downsamples))
        ],
        "tissue_fraction": tissue.fraction,
        "tiling": {
            "target_mpp": tiling.target_mpp,
            "tile_size": tiling.tile_size,
            "overlap": tiling.overlap,
            "min_tissue": tiling.min_tissue,
            "level": grid.level,
            "read_size": grid.read_size,
            "grid_tiles": len(full),
            "tiles": len(grid),
        },
    }


def demo_slide_path(folder: str | os.PathLike[str] | None = None) -> Path:
    """A small synthetic Aperio-style slide (made once, then reused) for trying the CLI."""
    from virtime.simulate.slides import make_slide

    folder = Path(folder) if folder else Path(tempfile.gettempdir()) / "virtime-demo"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "demo_slide.svs"
    if not path.exists():
        make_slide(path, 3072, 2048, mpp=0.5, fmt="aperio", seed=7)
    return path
