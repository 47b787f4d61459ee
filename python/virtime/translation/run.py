"""One slide's translation: the request checked, the folder locked, the tile loop, the writes.

:func:`translate_slide` is what :func:`virtime.translation.translate` runs, with two hooks for
callers that translate several slides in a row (:func:`~virtime.translation.translate_slides`,
the cohort workers): a slide prepared ahead (``prepared``) and an executor that runs the
finishing writes while the next slide's loop runs (``finisher``). It checks the request, locks
the slide folder, applies the resume rules (:mod:`~virtime.translation.resume`), builds the grid,
canvas and engine and hands them to a :class:`SlideRun`, whose :meth:`SlideRun.run_tiles` runs
the tile loop (:mod:`~virtime.translation.loop`) and :meth:`SlideRun.finish` the finishing
writes (:mod:`~virtime.translation.outputs`).
"""

from __future__ import annotations

import functools
import logging
import os
import time
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

import numpy as np

from virtime import __version__
from virtime.errors import OutputError, VirtimeError
from virtime.io.slide_folder import SlideFolder
from virtime.translation.config import TranslateConfig
from virtime.translation.journal import FAILURE_COLUMN
from virtime.translation.request import (
    check_model,
    check_output_root,
    check_slide_mpp,
    resolve_normalizer,
    slide_output_dir,
    translation_engine,
)
from virtime.translation.result import TranslateResult

log = logging.getLogger(__name__)

__all__ = ["SlideRun", "translate_slide"]


@dataclass(kw_only=True)
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
    content_hash: Any = None  # the slide file's SHA-256 (BackgroundContentHash), for provenance
    embedder: Any = None
    cells: Any = None
    loop_config: TranslateConfig | None = None
    journal: Any = None  # the partial tile table (translation/journal.py): rows appended per batch
    timings: dict[str, float] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    band_outputs: Any = None  # thumbnail and features taken from the bands (band_outputs.py)

    def run_tiles(self) -> None:
        """The hot loop: batches in, windows through the engine, canvas and tile rows out (the
        fused C++ post-processing on the CPU, or the device path on a GPU)."""
        from virtime.translation.loop import batch_step, run_tile_loop

        config = self.loop_config if self.loop_config is not None else self.config
        self.attach_band_outputs()
        # --cells too: the device path downloads each tile's blended probabilities as uint8.
        self.rows, self.failures = run_tile_loop(self, batch_step(self, config), config)

    def attach_band_outputs(self) -> None:
        """Thumbnail and feature observers on the canvas, before its first band is written
        (:mod:`virtime.translation.band_outputs`): :meth:`finish` then reads nothing back."""
        if self.band_outputs is None and not self.canvas.finished:
            from virtime.translation.band_outputs import attach_band_outputs

            self.band_outputs = attach_band_outputs(
                self.canvas, self.tissue.mask, self.rows, self.config, grid=self.grid,
                failure_column=FAILURE_COLUMN)

    def finish(self) -> TranslateResult:
        """Tile table, tissue mask, thumbnail, optional OME-TIFF and features; summary last."""
        from virtime.translation.outputs import finish_slide

        return finish_slide(self)


@overload
def translate_slide(slide: str | os.PathLike[str] | Any, model: Any,
                    output: str | os.PathLike[str], config: TranslateConfig = ..., *,
                    slide_id: str | None = ..., engine: Any | None = ...,
                    embedder: Any | None = ..., prepared: Any | None = ...,
                    finisher: None = ...) -> TranslateResult: ...


@overload
def translate_slide(slide: str | os.PathLike[str] | Any, model: Any,
                    output: str | os.PathLike[str], config: TranslateConfig = ..., *,
                    slide_id: str | None = ..., engine: Any | None = ...,
                    embedder: Any | None = ..., prepared: Any | None = ...,
                    finisher: Executor) -> TranslateResult | Future[TranslateResult]: ...


def translate_slide(
    slide: str | os.PathLike[str] | Any,
    model: Any,
    output: str | os.PathLike[str],
    config: TranslateConfig = TranslateConfig(),  # noqa: B008 - frozen, never mutated
    *,
    slide_id: str | None = None,
    engine: Any | None = None,
    embedder: Any | None = None,
    prepared: Any | None = None,
    finisher: Executor | None = None,
) -> TranslateResult | Future[TranslateResult]:
    """:func:`virtime.translation.translate`, with two hooks for runs over several slides.

    ``prepared``: this slide opened and its tissue detected ahead of time by a
    :class:`virtime.translation.prefetch.SlidePrefetcher` (used only when it is this path opened
    with ``config.mpp``), so the GPU does not wait between slides. ``finisher``: an executor the
    slide's finishing writes (tile table, masks, thumbnail, features, page, summary) run on once
    the tile loop is done; a ``Future`` of the result is then returned at once (a skipped slide's
    result is returned as it is), so the next slide's loop can start; the slide folder stays
    locked until the writes are done. Without ``finisher`` the result is a
    :class:`TranslateResult`.
    """
    t_start = time.perf_counter()
    slide, slide_path, slide_id, tissue = _open_request(slide, model, config, slide_id, prepared)
    out = slide_output_dir(output, slide_id)
    source, lock = _lock_folder(output, out, slide_path, config)
    deferred = False
    try:
        done = _translate_locked(slide=slide, slide_path=slide_path, slide_id=slide_id,
                                 model=model, out=out, config=config, engine=engine,
                                 embedder=embedder, source=source, t_start=t_start,
                                 tissue=tissue, defer_finish=finisher is not None)
        if isinstance(done, TranslateResult):
            return done
        assert finisher is not None  # a SlideRun comes back only with defer_finish
        deferred = True  # the finisher releases the lock once the slide's outputs are written
        return finisher.submit(_finish_and_release, done, lock, out)
    except OSError as exc:
        if isinstance(exc, VirtimeError):
            raise
        raise OutputError.from_os_error(exc, out) from exc
    finally:
        if not deferred:
            lock.release()


def _open_request(slide: Any, model: Any, config: TranslateConfig, slide_id: str | None,
                  prepared: Any) -> tuple[Any, Path, str, Any]:
    """The request checked and the slide opened (or taken from ``prepared``, or as given):
    ``(slide, slide path, slide id, prefetched tissue or None)``. Nothing is written yet."""
    from virtime.slide import Slide
    from virtime.slide_ids import slide_id_from_path, validate_slide_id
    from virtime.stitch.windows import output_factor

    opened = slide if isinstance(slide, Slide) else None
    slide_path = Path(opened.path if opened is not None else slide)
    if opened is not None and config.mpp is not None and not (
            opened.mpp_given and opened.mpp == config.mpp):
        opened = None  # reopened below with the configured mpp
    slide_id = (validate_slide_id(slide_id, slide_path) if slide_id is not None
                else slide_id_from_path(slide_path))
    model_mpp, _, _ = check_model(model, config)
    output_factor(model_mpp, config.output_mpp)  # refuse bad geometry before writing anything
    if prepared is not None and not prepared.fits(slide_path, config.mpp):
        prepared = None
    if opened is not None:
        slide = opened
    else:
        slide = prepared.slide if prepared is not None else Slide(slide_path, mpp=config.mpp)
    check_slide_mpp(slide, config, model_mpp)
    return slide, slide_path, slide_id, None if prepared is None else prepared.tissue


def _lock_folder(out_root: str | os.PathLike[str], out: Path, slide_path: Path,
                 config: TranslateConfig) -> tuple[dict[str, Any], Any]:
    """The slide file's identity and the slide folder, made and locked (an error writing it is an
    :class:`~virtime.errors.OutputError` naming the path)."""
    from virtime.slide_ids import slide_source
    from virtime.translation.lock import SlideLock

    try:
        source = slide_source(slide_path)
        check_output_root(out_root)
        out.mkdir(parents=True, exist_ok=True)
        return source, SlideLock(out, str(slide_path)).acquire(config.lock_timeout)
    except OSError as exc:
        if isinstance(exc, VirtimeError):
            raise
        raise OutputError.from_os_error(exc, out) from exc


def _finish_and_release(run: SlideRun, lock: Any, out: Path) -> TranslateResult:
    """A slide's finishing writes (:meth:`SlideRun.finish`), then its folder's lock released."""
    try:
        return run.finish()
    except OSError as exc:
        if isinstance(exc, VirtimeError):
            raise
        raise OutputError.from_os_error(exc, out) from exc
    finally:
        lock.release()


def _translate_locked(*, slide: Any, slide_path: Path, slide_id: str, model: Any, out: Path,
                      config: TranslateConfig, engine: Any, embedder: Any,
                      source: dict[str, Any], t_start: float, tissue: Any,
                      defer_finish: bool) -> TranslateResult | SlideRun:
    """:func:`translate_slide` once the slide folder is locked: its result, or with
    ``defer_finish`` the :class:`SlideRun` whose :meth:`~SlideRun.finish` is still to run (a
    skipped slide's result either way)."""
    from virtime.slide_ids import identity_fields
    from virtime.translation.resume import already_done, requested_fingerprint

    model_mpp, window, model_hash = check_model(model, config)
    normalizer = resolve_normalizer(config.normalize)
    # Temporary files of a killed run (e.g. the cell table's): ours to remove, the folder is locked.
    for stale in SlideFolder(out).remove_stale_partials():
        log.info("%s: removed %s, left by an interrupted run", out, stale.name)
    fingerprint = functools.partial(
        requested_fingerprint, model_hash=model_hash, config=config, normalizer=normalizer,
        window=window, model_mpp=model_mpp, slide_mpp=slide.mpp,
        identity=identity_fields(source))
    done, redo = already_done(out, slide_path, slide_id, source, fingerprint(engine), config)
    if done is not None:
        return done
    owns_engine = engine is None
    run = _start_run(slide=slide, slide_path=slide_path, slide_id=slide_id, model=model,
                     out=out, config=config, engine=engine, embedder=embedder, source=source,
                     t_start=t_start, tissue=tissue, redo=redo, normalizer=normalizer,
                     fingerprint=fingerprint)
    _run_loop(run, model_mpp=model_mpp, window=window, owns_engine=owns_engine)
    return run if defer_finish else run.finish()


def _start_run(*, slide: Any, slide_path: Path, slide_id: str, model: Any, out: Path,
               config: TranslateConfig, engine: Any, embedder: Any, source: dict[str, Any],
               t_start: float, tissue: Any, redo: bool, normalizer: Any,
               fingerprint: Any) -> SlideRun:
    """The grid, the engine and the canvas of a slide to translate (resumed from an interrupted
    run's finished bands when its fingerprint is this one), as a :class:`SlideRun`."""
    from virtime.slide_ids import BackgroundContentHash
    from virtime.stitch.canvas import StreamingCanvas, canvas_shape
    from virtime.stitch.windows import output_factor, plan_windows, tile_stride, window_weight
    from virtime.tiling import make_tile_grid
    from virtime.tissue import detect_tissue
    from virtime.translation.journal import TileJournal
    from virtime.translation.loop import JsonLog
    from virtime.translation.resume import kept_rows, load_partial_tiles

    model_mpp, window, model_hash = check_model(model, config)
    factor = output_factor(model_mpp, config.output_mpp)
    # The whole file's hash (what a later skip check falls back on) overlaps the tile loop.
    content_hash = BackgroundContentHash(slide_path)
    tissue = tissue if tissue is not None else detect_tissue(slide)  # prefetched, or now
    origins = plan_windows(config.tile_size, window, config.overlap)
    weight = window_weight(window, config.overlap)
    stride = tile_stride(config.tile_size, config.overlap)
    grid = make_tile_grid(slide, config.tiling_for(model_mpp), tissue)
    out.mkdir(parents=True, exist_ok=True)
    if config.force:
        (out / SlideFolder.SUMMARY).unlink(missing_ok=True)
    scale = slide.mpp / model_mpp  # model pixels per level-0 pixel
    w0, h0 = slide.dimensions
    shape = canvas_shape((int(np.ceil(h0 * scale)), int(np.ceil(w0 * scale))), factor)
    # Embeddings and cells of an interrupted run's tiles are not kept: the slide starts afresh.
    fresh = config.force or redo or embedder is not None or config.cells
    if redo:
        (out / SlideFolder.SUMMARY).unlink(missing_ok=True)  # no longer finished for this request
    owns_engine = engine is None
    if owns_engine:
        engine = translation_engine(model, config)
    canvas = None
    try:  # the canvas resumes only a partial run with this fingerprint (engine included)
        fp = fingerprint(engine)
        canvas = StreamingCanvas(
            out / SlideFolder.ZARR, shape, factor=factor, mpp=config.output_mpp,
            resume=not fresh, name=slide_id,
            extra_metadata={"model_hash": model_hash, "slide": os.path.abspath(slide_path),
                            "overlap": config.overlap, "virtime_version": __version__,
                            "fingerprint": fp},
            fingerprint=fp, restart_on_mismatch=True,
        )
        fresh = fresh or bool(canvas.restarted_because)  # discard the other run's tile rows too
        tile_xy_model = np.rint(grid.xy * scale).astype(np.int64)
        # Resume: tiles whose whole footprint lies in finished bands were done by an earlier run.
        todo = np.flatnonzero(tile_xy_model[:, 1] + config.tile_size > canvas.resume_y)
        previous = load_partial_tiles(out, fresh)
        jlog = JsonLog(config.log_json)
    except BaseException:
        content_hash.cancel()
        if canvas is not None:
            canvas.abort()  # its writer threads stop; the partial canvas stays resumable
        if owns_engine:
            engine.close()
        raise
    jlog.emit(event="start", slide=str(slide_path), slide_id=slide_id, tiles=len(grid),
              todo=int(len(todo)))
    timings = {"read_cpu": 0.0, "normalize_cpu": 0.0, "pack_cpu": 0.0, "engine": 0.0,
               "postprocess": 0.0, "write": 0.0}
    if embedder is not None:
        timings["embed"] = 0.0
    return SlideRun(
        slide=slide, slide_path=slide_path, slide_id=slide_id, out=out, config=config,
        grid=grid, tissue=tissue, canvas=canvas, engine=engine, normalizer=normalizer,
        model_hash=model_hash, origins=origins, weight=weight, stride=stride,
        tile_xy_model=tile_xy_model, todo=todo, jlog=jlog, t_start=t_start,
        provenance={"fingerprint": fp, "source": source}, content_hash=content_hash,
        embedder=embedder, timings=timings,
        rows=kept_rows(previous, todo), journal=TileJournal(out / SlideFolder.PARTIAL_TILES))


def _run_loop(run: SlideRun, *, model_mpp: float, window: int, owns_engine: bool) -> None:
    """The run's tile loop with what goes around it: the journal started, the embedder and the
    cell collector started and finished, the batch sizes fitted to the host memory budget, the
    canvas closed. Interrupted, the canvas is settled so a rerun resumes; the engine (when the
    run built it), the embedder, the cell collector and the event log are closed either way."""
    out, config, canvas, engine = run.out, run.config, run.canvas, run.engine
    embedder, timings, todo = run.embedder, run.timings, run.todo
    cells = None
    try:
        run.journal.start(run.rows)  # the kept rows; the loop appends the new ones
        (out / SlideFolder.LEGACY_PARTIAL_TILES).unlink(missing_ok=True)  # older virtime's
        if embedder is not None:
            embedder.start(config.tile_size, model_mpp, len(todo),
                           str(getattr(engine, "device", "cpu")))
        if config.cells:  # virtual single cells from each tile's full-resolution probabilities
            from virtime.cells.collector import start_translation_cells

            cells = run.cells = start_translation_cells(
                run.grid, todo, run.tile_xy_model, config.tile_size, run.stride, run.origins,
                run.weight, model_mpp, run.slide.mpp / model_mpp, out, run.model_hash)
        # Batch sizes for the host memory budget (engines/memory.py; outputs unchanged). Not on
        # the device path: it holds no float tiles or logits on the host, only the bounded ring.
        from virtime.translation.device_path import use_device_path

        if len(todo) and not use_device_path(engine, config):
            from virtime.engines.memory import fit_memory_budget

            run.loop_config = fit_memory_budget(engine, config, window=window,
                                                windows_per_tile=len(run.origins),
                                                emit_uint8=embedder is not None)
        t_loop = time.perf_counter()
        run.run_tiles()
        timings["tile_loop_wall"] = time.perf_counter() - t_loop
        if cells is not None:  # before finish(): the slide features read cells.parquet
            cells.finish()
            timings["cells"] = cells.seconds
        if embedder is not None:
            t0 = time.perf_counter()
            embedder.finish(out / SlideFolder.EMBEDDINGS, str(run.slide_path), run.grid,
                            run.slide.mpp)
            timings["embed"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        canvas.close()
        timings["write"] += time.perf_counter() - t0
        # Busy seconds of the canvas's background threads (they overlap the loop).
        timings["band_writer_thread"] = canvas.thread_seconds["band_writer"]
        timings["observer_thread"] = canvas.thread_seconds["observers"]
    except BaseException:
        if run.content_hash is not None:
            run.content_hash.cancel()
        canvas.abort()  # settle queued band writes so a rerun resumes from a consistent manifest
        run.jlog.emit(event="interrupted", slide_id=run.slide_id)
        raise
    finally:
        if owns_engine:
            engine.close()
        if embedder is not None:
            embedder.close()
        if cells is not None:
            cells.close()  # drops an unfinished cell table; a no-op after finish
        run.jlog.close()
