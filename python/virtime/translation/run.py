"""One slide's translation as a small state object: the tile loop and the finishing writes.

:func:`virtime.translation.translate` checks the request, locks the slide folder, builds the
grid, canvas and engine, and hands them to a :class:`SlideRun`; :meth:`SlideRun.run_tiles` runs
the hot loop (the fused C++ CPU post-processing here, or :mod:`virtime.translation.device_path`
on a GPU) and :meth:`SlideRun.finish` writes the tile table, masks, thumbnail, features and, last,
``summary.json``.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from virtime import __version__
from virtime._progress import progress
from virtime.io import write_parquet
from virtime.io.slide_folder import SlideFolder
from virtime.translation.config import TranslateConfig
from virtime.translation.pipeline import (
    FAILED_MASK_NAME,
    FAILURE_COLUMN,
    PARTIAL_JOURNAL_NAME,
    PARTIAL_TILES_NAME,
    SUMMARY_NAME,
    TILES_NAME,
    ZARR_NAME,
    TranslateResult,
    _failed_on_canvas,
    _failure_row,
    _mask_on_canvas,
    _save_mask,
    _sigmoid,
    _split_failures,
    _tile_row,
    _write_thumbnail,
)
from virtime.translation.postprocess import WindowPostprocessor

log = logging.getLogger(__name__)

__all__ = ["SlideRun"]


@dataclass
class SlideRun:
    """The state one slide's translation shares between its tile loop and its finishing writes.

    ``config`` is the request (recorded in ``summary.json``); ``loop_config`` the same with the
    batch sizes fitted to the memory budget (what the loop runs with; outputs are unchanged).
    ``rows`` (tile rows, those of an interrupted run's finished bands included) and ``failures``
    (failed-tile records) grow as the loop goes, the rows appended to ``journal`` (the partial
    tile table a resume reads); ``timings`` collects seconds per stage.
    """

    slide: Any
    slide_path: Path
    slide_id: str
    out: Path
    config: TranslateConfig
    grid: Any
    tissue: Any
    canvas: Any
    engine: Any
    normalizer: Any
    model_hash: str
    origins: Any  # window origins within a tile (model pixels)
    weight: np.ndarray  # the window's blending weight
    stride: int
    tile_xy_model: np.ndarray  # (n, 2) tile origins in model pixels
    todo: np.ndarray  # indices of the tiles this run computes
    jlog: Any
    t_start: float
    provenance: dict[str, Any] = field(default_factory=dict)  # fingerprint and source slide
    embedder: Any = None
    cells: Any = None
    loop_config: TranslateConfig | None = None
    journal: Any = None  # the partial tile table (translation/journal.py): rows appended per batch
    timings: dict[str, float] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    band_outputs: Any = None  # thumbnail and features taken from the bands (band_outputs.py)

    def run_tiles(self) -> None:
        """The hot loop: batches in, windows through the engine, canvas and tile rows out."""
        from virtime.translation.device_path import run_tiles_device, use_device_path

        config = self.loop_config if self.loop_config is not None else self.config
        self.attach_band_outputs()
        # --cells too: the device path downloads each tile's blended probabilities as uint8.
        if use_device_path(self.engine, config):  # on a GPU (or forced)
            self.rows, self.failures = run_tiles_device(self)
        else:
            self.rows, self.failures = self._run_tiles_host(config)

    def _run_tiles_host(self, config: TranslateConfig) -> tuple[list[dict[str, Any]],
                                                                list[dict[str, Any]]]:
        """The CPU loop: fused C++ post-processing of each batch's windows."""
        from virtime.batcher import iter_batches

        slide, grid, todo, engine, normalizer = (self.slide, self.grid, self.todo, self.engine,
                                                 self.normalizer)
        canvas, origins, weight, stride = self.canvas, self.origins, self.weight, self.stride
        tile_xy_model, timings, rows = self.tile_xy_model, self.timings, self.rows
        slide_id, embedder, cells = self.slide_id, self.embedder, self.cells
        failures: list[dict[str, Any]] = []
        window = weight.shape[0]
        post = WindowPostprocessor(weight, canvas.factor, origins, config.tile_size, stride,
                                   threads=config.threads)
        started = time.perf_counter()
        done = 0
        with progress(total=len(todo), desc=f"translate {slide_id}", unit="tile",
                      enabled=config.show_progress) as bar:
            if len(todo) == 0:
                return rows, failures
            batches = iter_batches(slide, grid, normalizer=normalizer, batch_size=config.batch_size,
                                   threads=config.threads, emit_uint8=embedder is not None,
                                   pack="float32", tiles=todo)
            position = {int(t): i for i, t in enumerate(todo)}
            for batch in batches:
                timings["read_cpu"] += batch.read_seconds
                timings["normalize_cpu"] += batch.normalize_seconds
                timings["pack_cpu"] += batch.pack_seconds
                new = [{"tile": f.tile_index, "x": f.x, "y": f.y, "reason": f.reason}
                       for f in batch.failures]
                failures += new
                if cells is not None and new:
                    cells.fail([f["tile"] for f in new])
                rows += [_failure_row(f) for f in new]  # in the partial table: a resume counts them
                if len(batch) and embedder is not None:
                    t0 = time.perf_counter()
                    embedder.add(batch.rgb, batch.tile_index)
                    timings["embed"] += time.perf_counter() - t0
                if len(batch):
                    windows = np.stack([batch.tensor[:, :, y : y + window, x : x + window]
                                        for x, y in origins], axis=1)
                    n, k = windows.shape[:2]
                    t0 = time.perf_counter()
                    logits = engine.run(windows.reshape(n * k, *windows.shape[2:]))
                    timings["engine"] += time.perf_counter() - t0
                    if cells is not None:  # blended tile probabilities, segmented with a halo
                        cells.add_windows(batch.tile_index, logits, origins, weight)
                    t0 = time.perf_counter()
                    # Fused C++ pass: sigmoid, weight, pooling to the canvas grid, blended tile stats.
                    res = post.process(logits)
                    for i, tile in enumerate(batch.tile_index):
                        tx, ty = (int(v) for v in tile_xy_model[tile])
                        for j, (wx, wy) in enumerate(origins):
                            if post.aligned(tx + wx, ty + wy):
                                f = canvas.factor
                                canvas.add_pooled(res.wp[i, j], res.ws, (tx + wx) // f, (ty + wy) // f)
                            else:  # off the canvas grid: numpy pooling of the zero-padded window
                                canvas.add(_sigmoid(logits[i * k + j]), tx + wx, ty + wy, weight)
                        rows.append(_tile_row(int(tile), grid, res.positive_fraction[i],
                                              res.mean_probability[i]))
                    timings["postprocess"] += time.perf_counter() - t0
                t0 = time.perf_counter()
                self.write_finished_bands(batch, rows, position)
                timings["write"] += time.perf_counter() - t0
                done = self.report_progress(batch, done, started, bar)
        return rows, failures

    def attach_band_outputs(self) -> None:
        """Thumbnail and feature observers on the canvas, before its first band is written
        (:mod:`virtime.translation.band_outputs`): :meth:`finish` then reads nothing back."""
        if self.band_outputs is None and not self.canvas.finished:
            from virtime.translation.band_outputs import attach_band_outputs

            self.band_outputs = attach_band_outputs(
                self.canvas, self.tissue.mask, self.rows, self.config, grid=self.grid,
                failure_column=FAILURE_COLUMN)

    def write_finished_bands(self, batch: Any, rows: list[dict[str, Any]],
                             position: dict[int, int]) -> None:
        """After a batch (host or device loop): journal its rows, then write every canvas band
        that no later tile reaches; the journal is fsynced whenever a band is written."""
        todo, canvas = self.todo, self.canvas
        last = position[int(batch.tile_index[-1] if len(batch) else batch.failures[-1].tile_index)]
        nxt = todo[last + 1] if last + 1 < len(todo) else None
        self.journal.append(rows)  # before the bands: a finished band's rows are kept
        if canvas.flush_until(int(self.tile_xy_model[nxt, 1]) if nxt is not None else
                              canvas.shape_yx[0] * canvas.factor):
            self.journal.append(rows, sync=True)

    def report_progress(self, batch: Any, done: int, started: float, bar: Any) -> int:
        """Progress bar and JSON-lines event after a batch; returns the tiles done so far."""
        n = len(batch) + len(batch.failures)
        done += n
        bar.update(n)
        rate = done / max(time.perf_counter() - started, 1e-9)
        self.jlog.emit(event="progress", slide_id=self.slide_id, tiles_done=done,
                       tiles_total=len(self.todo), tiles_per_s=round(rate, 3))
        return done



    def finish(self) -> TranslateResult:
        """Tile table, tissue mask, thumbnail, optional OME-TIFF and features; summary last."""
        slide, slide_path, slide_id, out = self.slide, self.slide_path, self.slide_id, self.out
        grid, tissue, canvas, rows, failures = (self.grid, self.tissue, self.canvas, self.rows,
                                                self.failures)
        config, timings, model_hash, engine = self.config, self.timings, self.model_hash, self.engine
        t_start, provenance = self.t_start, self.provenance
        from virtime.io import atomic_write_json
        from virtime.translation.timeline import cpu_timeline

        t0 = time.perf_counter()
        table, failures = _split_failures(pd.DataFrame(rows), failures)
        write_parquet(table, out / TILES_NAME, model_hash=model_hash)  # atomic, stamped
        bands = self.band_outputs
        mask = bands.mask if bands is not None else _mask_on_canvas(tissue.mask, canvas.shape_yx)
        # Tissue under failed tiles has no prediction (zeros in the map): it leaves the mask, so no
        # feature counts it in its denominator, and is kept apart for the failed-tile columns.
        lost = mask & _failed_on_canvas(grid, failures, table, canvas, config.tile_size)
        mask = mask & ~lost
        _save_mask(out / SlideFolder.TISSUE_MASK, mask)
        if failures:
            _save_mask(out / FAILED_MASK_NAME, lost)
        else:
            (out / FAILED_MASK_NAME).unlink(missing_ok=True)
        he = _write_thumbnail(slide, out, config, None if bands is None else bands.thumbnail)
        if config.ome_tiff:
            from virtime.stitch.ometiff import export_ome_tiff

            export_ome_tiff(out / ZARR_NAME, out / SlideFolder.OME_TIFF)
        timings["write"] += time.perf_counter() - t0
        if config.features:
            from virtime.features import features_from_outputs

            t0 = time.perf_counter()
            computed = None  # accumulated from the bands with this very tissue mask, or reread
            if bands is not None and bands.features is not None:
                if bands.features.matches(mask, canvas.chunk):
                    computed = bands.features.result()
                else:
                    log.info("%s: recomputing the features from the stored map (the tissue "
                             "under failed tiles changed after its bands were written)", out)
            features_from_outputs(out, failures=failures, computed=computed,
                                  **config.slide_features.as_kwargs())
            timings["features"] = time.perf_counter() - t0
        from virtime.view.page import write_slide_page  # OUT/SLIDE_ID/index.html, no server needed

        write_slide_page(out, slide=slide, he=he)  # the thumbnail's H&E: not read twice
        (out / PARTIAL_TILES_NAME).unlink(missing_ok=True)
        (out / PARTIAL_JOURNAL_NAME).unlink(missing_ok=True)
        seconds = time.perf_counter() - t_start
        summary = {
            "status": "done",
            "slide": os.path.abspath(slide_path),  # readable from any folder
            "slide_id": slide_id,
            "virtime_version": __version__,
            "model_hash": model_hash,
            "backend": getattr(engine, "name", "?"),
            "precision": getattr(engine, "precision", config.precision),
            "device": str(getattr(engine, "device", "")),
            "slide_mpp": slide.mpp,
            "output_mpp": config.output_mpp,
            "tiles_total": len(grid),
            "tiles_done": int(len(table)),
            "tiles_failed": len(failures),
            "failed_tiles": failures,
            "tissue_px_failed": int(lost.sum()),  # canvas pixels, in failed_mask.npy
            "tissue_fraction": tissue.fraction,
            "timings_seconds": {k: round(v, 4) for k, v in timings.items() if k != "timeline"},
            "timeline": timings.get("timeline") or cpu_timeline(timings),  # per stage: busy, overlap
            "seconds": round(seconds, 3),
            "config": config.as_dict(),
            **(provenance or {}),  # fingerprint and source slide: what a rerun compares
        }
        atomic_write_json(out / SUMMARY_NAME, summary)
        return TranslateResult(slide_id, out, False, int(len(table)), len(failures), seconds, summary)


