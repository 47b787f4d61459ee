"""Writes a slide's tissue tiles as PNG files plus a Parquet tile table (``virtime tiles``).

Each PNG is written to a temporary name and renamed, and the table last, so an interrupted export
never leaves a half-written tile listed as done.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from virtime._progress import progress as progress_bar
from virtime.batcher import STAIN_STATUS, iter_batches
from virtime.slide import Slide
from virtime.tiling import TilingConfig, make_tile_grid
from virtime.tissue import detect_tissue

__all__ = ["TileExportResult", "export_tiles"]


@dataclass(frozen=True)
class TileExportResult:
    folder: Path
    written: int
    failed: int
    table: Path


def export_tiles(
    slide_path: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    mpp: float | None = None,
    tiling: TilingConfig = TilingConfig(),
    normalize: str = "none",
    threads: int = 0,
    limit: int | None = None,
    show_progress: bool = True,
) -> TileExportResult:
    """Tiles the slide's tissue and writes ``tiles/<col>_<row>.png`` and ``tiles.parquet``."""
    from PIL import Image

    from virtime.io import atomic_path

    slide = Slide(slide_path, mpp=mpp)
    grid = make_tile_grid(slide, tiling, detect_tissue(slide))
    normalizer = None
    if normalize != "none":
        from virtime.stain import get_normalizer

        normalizer = get_normalizer(normalize)
    out = Path(output)
    tiles_dir = out / "tiles"
    tiles_dir.mkdir(parents=True, exist_ok=True)
    subset = None if limit is None else list(range(min(limit, len(grid))))
    rows: list[dict] = []
    failed: list[dict] = []
    total = len(subset) if subset is not None else len(grid)
    with progress_bar(total=total, desc="tiles", unit="tile", enabled=show_progress) as bar:
        for batch in iter_batches(
            slide, grid, normalizer=normalizer, threads=threads, pack="none", tiles=subset
        ):
            for k, idx in enumerate(batch.tile_index):
                col, row = (int(v) for v in grid.colrow[idx])
                name = f"{col:05d}_{row:05d}.png"
                with atomic_path(tiles_dir / name) as tmp:
                    Image.fromarray(batch.rgb[k]).save(tmp, format="PNG")
                rows.append({
                    "x": int(batch.xy[k, 0]), "y": int(batch.xy[k, 1]), "col": col, "row": row,
                    "tissue_fraction": float(grid.tissue_fraction[idx]), "file": f"tiles/{name}",
                    "stain": STAIN_STATUS[int(batch.stain_status[k])],
                    "stain_note": batch.stain_note[k],
                })
            failed += [{"tile_index": f.tile_index, "x": f.x, "y": f.y, "reason": f.reason}
                       for f in batch.failures]
            bar.update(len(batch) + len(batch.failures))
    from virtime.io import NO_MODEL, write_parquet

    table = out / "tiles.parquet"  # H&E tiles: no model made them
    write_parquet(pd.DataFrame(rows), table, model_hash=NO_MODEL)
    if failed:
        write_parquet(pd.DataFrame(failed), out / "failed_tiles.parquet", model_hash=NO_MODEL)
    return TileExportResult(out, len(rows), len(failed), table)
