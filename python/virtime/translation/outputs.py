"""A slide's finishing writes, once its tile loop is done: everything but the map itself.

:func:`finish_slide` writes, in order, the tile table, the tissue mask (and the failed-tile
mask), the thumbnail, the optional OME-TIFF, the slide features, the slide page and, last,
``summary.json``, which marks the slide done. Each step is one small function here; the thumbnail
and the features come from the observers the canvas fed as its bands were written
(:mod:`virtime.translation.band_outputs`) where those are complete.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from virtime import __version__
from virtime.io import write_parquet
from virtime.io.slide_folder import SlideFolder
from virtime.translation.band_outputs import mask_on_canvas
from virtime.translation.config import TranslateConfig
from virtime.translation.journal import FAILURE_COLUMN
from virtime.translation.result import TranslateResult

__all__ = ["failed_on_canvas", "finish_slide", "refresh_features", "save_mask",
           "split_failures", "summary_record", "write_features", "write_masks",
           "write_thumbnail"]

log = logging.getLogger(__name__)


def split_failures(
    table: pd.DataFrame, failures: list[dict[str, Any]]
) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """Tile rows and every failure of the run: this part's and those an earlier, interrupted
    part recorded in the partial table (a tile that later succeeded is no failure)."""
    found: dict[int, dict[str, Any]] = {}
    if FAILURE_COLUMN in table.columns:
        bad = table[FAILURE_COLUMN].notna()
        for r in table[bad].to_dict("records"):
            found[int(r["tile"])] = {"tile": int(r["tile"]), "x": int(r["x"]), "y": int(r["y"]),
                                     "reason": str(r[FAILURE_COLUMN])}
        table = table[~bad].drop(columns=[FAILURE_COLUMN])
    for f in failures:
        found[int(f["tile"])] = {**f, "tile": int(f["tile"])}
    if len(table):
        table = table.sort_values("tile", kind="stable").drop_duplicates("tile", keep="last")
        for t in table["tile"].astype(int):
            found.pop(int(t), None)
        for col in ("tile", "x", "y"):
            table[col] = table[col].astype(np.int64)
    return table.reset_index(drop=True), [found[t] for t in sorted(found)]


def failed_on_canvas(grid: Any, failures: list[dict[str, Any]], table: pd.DataFrame,
                     canvas: Any, tile_size: int) -> np.ndarray:
    """Canvas pixels that failed tiles cover and no finished tile does (so without prediction).

    See :func:`virtime.translation.band_outputs.failed_tissue` (a tile's footprint is
    ``tile_size`` model pixels from its level-0 origin times the grid's model-per-level-0 scale,
    as the tile loop places it).
    """
    from virtime.translation.band_outputs import failed_tissue

    failed = np.array([(f["x"], f["y"]) for f in failures], dtype=np.float64).reshape(-1, 2)
    done = table[["x", "y"]].to_numpy(dtype=np.float64) if len(table) else np.zeros((0, 2))
    return failed_tissue(failed, done, scale=grid.tile_size / grid.tile_size_level0,
                         reach=grid.tile_size_level0, factor=canvas.factor, tile_size=tile_size,
                         shape_yx=canvas.shape_yx)


def save_mask(path: Path, mask: np.ndarray) -> None:
    """``mask`` as a ``.npy`` file, written atomically."""
    from virtime.io import atomic_path

    with atomic_path(path) as tmp, open(tmp, "wb") as fh:  # unique name, removed on failure
        np.save(fh, mask)


def write_thumbnail(slide: Any, out: Path, config: TranslateConfig,
                    tap: Any = None) -> np.ndarray | None:
    """The thumbnail PNG: from the channels a :class:`~virtime.stitch.observers.LevelTap` kept
    as the canvas was written, or (without a complete tap) read from the stored pyramid.

    Returns the H&E it read (at the thumbnail's size), which the slide page reuses.
    """
    from virtime.stitch.thumbnail import slide_he_reader, thumbnail_from_probs, thumbnail_from_zarr

    # The H&E's coarsest level, read in strips and area-averaged onto the thumbnail grid as it
    # goes: a single-level slide never has its whole level in memory.
    read = slide_he_reader(slide)
    kept: list[np.ndarray] = []

    def he(shape_yx: tuple[int, int]) -> np.ndarray:
        kept.append(read(shape_yx))
        return kept[-1]

    if tap is not None and tap.complete:
        thumbnail_from_probs(tap.image, he, config.thumbnail_channels,
                             png_path=out / SlideFolder.THUMBNAIL)
    else:
        thumbnail_from_zarr(out / SlideFolder.ZARR, he, config.thumbnail_channels,
                            png_path=out / SlideFolder.THUMBNAIL)
    return kept[-1] if kept else None


def write_masks(run: Any, table: pd.DataFrame,
                failures: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """The tissue mask on the canvas grid, less the tissue under failed tiles, and the failed
    mask (only when tiles failed): ``(mask, lost)``.

    Tissue under failed tiles has no prediction (zeros in the map): it leaves the mask, so no
    feature counts it in its denominator, and is kept apart for the failed-tile columns.
    """
    out, canvas, bands = run.out, run.canvas, run.band_outputs
    mask = bands.mask if bands is not None else mask_on_canvas(run.tissue.mask, canvas.shape_yx)
    lost = mask & failed_on_canvas(run.grid, failures, table, canvas, run.config.tile_size)
    mask = mask & ~lost
    save_mask(out / SlideFolder.TISSUE_MASK, mask)
    if failures:
        save_mask(out / SlideFolder.FAILED_MASK, lost)
    else:
        (out / SlideFolder.FAILED_MASK).unlink(missing_ok=True)
    return mask, lost


def write_features(run: Any, mask: np.ndarray, lost: np.ndarray,
                   failures: list[dict[str, Any]]) -> dict[str, Any]:
    """``features.parquet`` (returns its row): accumulated from the bands with this very tissue
    mask, from memory, or (the tissue under failed tiles changed after its bands were written,
    or a resumed run's bands were not all seen) from the stored map, which is then verified."""
    from virtime.features.table import features_from_bands, features_from_outputs

    bands, out, canvas = run.band_outputs, run.out, run.canvas
    settings = run.config.slide_features.as_kwargs()
    if bands is not None and bands.features is not None:
        if bands.features.matches(mask, canvas.chunk):
            return features_from_bands(
                out, bands.features.result(), shape_yx=canvas.shape_yx, tissue=mask,
                failed=lost if failures else None, map_mpp=canvas.mpp,
                model_hash=run.model_hash, failures=failures, **settings)
        log.info("%s: recomputing the features from the stored map (the tissue "
                 "under failed tiles changed after its bands were written)", out)
    return features_from_outputs(out, failures=failures, **settings)


def summary_record(run: Any, table: pd.DataFrame, failures: list[dict[str, Any]],
                   lost: np.ndarray, seconds: float) -> dict[str, Any]:
    """The slide's ``summary.json``: what was done, with what, how long each stage took, and the
    fingerprint and source slide a rerun compares."""
    from virtime.translation.timeline import cpu_timeline

    config, engine, timings = run.config, run.engine, run.timings
    return {
        "status": "done",
        "slide": os.path.abspath(run.slide_path),  # readable from any folder
        "slide_id": run.slide_id,
        "virtime_version": __version__,
        "model_hash": run.model_hash,
        "backend": getattr(engine, "name", "?"),
        "precision": getattr(engine, "precision", config.precision),
        "device": str(getattr(engine, "device", "")),
        "slide_mpp": run.slide.mpp,
        "output_mpp": config.output_mpp,
        "tiles_total": len(run.grid),
        "tiles_done": int(len(table)),
        "tiles_failed": len(failures),
        "failed_tiles": failures,
        "tissue_px_failed": int(lost.sum()),  # canvas pixels, in failed_mask.npy
        "tissue_fraction": run.tissue.fraction,
        "timings_seconds": {k: round(v, 4) for k, v in timings.items() if k != "timeline"},
        "timeline": timings.get("timeline") or cpu_timeline(timings),  # per stage: busy, overlap
        "seconds": round(seconds, 3),
        "config": config.as_dict(),
        **(run.provenance or {}),  # fingerprint and source slide: what a rerun compares
    }


def finish_slide(run: Any) -> TranslateResult:
    """A :class:`~virtime.translation.run.SlideRun`'s finishing writes: tile table, tissue mask,
    thumbnail, optional OME-TIFF and features, the slide page; ``summary.json`` last."""
    from virtime.io import atomic_write_json

    out, config, timings = run.out, run.config, run.timings
    t0 = time.perf_counter()
    table, failures = split_failures(pd.DataFrame(run.rows), run.failures)
    write_parquet(table, out / SlideFolder.TILES, model_hash=run.model_hash)  # atomic, stamped
    mask, lost = write_masks(run, table, failures)
    bands = run.band_outputs
    he = write_thumbnail(run.slide, out, config, None if bands is None else bands.thumbnail)
    if config.ome_tiff:
        from virtime.stitch.ometiff import export_ome_tiff

        export_ome_tiff(out / SlideFolder.ZARR, out / SlideFolder.OME_TIFF)
    timings["write"] += time.perf_counter() - t0
    features = None
    if config.features:
        t0 = time.perf_counter()
        features = pd.DataFrame([write_features(run, mask, lost, failures)])
        timings["features"] = time.perf_counter() - t0
    from virtime.view.page import write_slide_page  # OUT/SLIDE_ID/index.html, no server needed

    # From what the bands and this function hold: the page reads nothing back (the thumbnail's
    # H&E, the page's map levels, the two tables); a resumed run's page reads the map.
    page = None if bands is None else bands.page_data(table, features)
    write_slide_page(out, slide=run.slide, he=he, data=page)
    (out / SlideFolder.LEGACY_PARTIAL_TILES).unlink(missing_ok=True)
    (out / SlideFolder.PARTIAL_TILES).unlink(missing_ok=True)
    if run.content_hash is not None:  # hashed on a thread beside the tile loop
        source = run.provenance.get("source") or {}
        run.provenance["source"] = {**source, "content_sha256": run.content_hash.result()}
        timings["slide_hash"] = run.content_hash.seconds
    seconds = time.perf_counter() - run.t_start
    summary = summary_record(run, table, failures, lost, seconds)
    atomic_write_json(out / SlideFolder.SUMMARY, summary)
    return TranslateResult(run.slide_id, out, False, int(len(table)), len(failures), seconds,
                           summary)


def refresh_features(out: Path, slide_path: Path, summary: dict[str, Any],
                     settings: dict[str, Any]) -> None:
    """A finished folder's features recomputed from its stored map with ``settings``, and its
    slide page (which shows them) written again."""
    from virtime.features import features_from_outputs
    from virtime.slide import Slide
    from virtime.view.page import write_slide_page

    features_from_outputs(out, **settings)
    write_slide_page(out, slide=Slide(slide_path, mpp=summary.get("slide_mpp")))
