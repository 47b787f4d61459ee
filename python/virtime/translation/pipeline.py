"""Whole-slide translation: H&E slide in, virtual mIF (OME-Zarr), tile table and summary out.

Batcher (C++ worker threads: read, normalize, pack) → engine (windows of the model) → sigmoid,
per-tile statistics and pooling → a streaming canvas that writes finished row bands. The batcher
prepares the next batches while the engine runs (the GIL is released in the core), so the CPU
work around the model overlaps it.

Every output is written atomically; ``summary.json`` is written last and marks the slide done, so
a rerun skips finished slides (unless ``force``) and resumes an interrupted one from the last
completed canvas band.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from virtime import __version__
from virtime.channels import CHANNEL_NAMES
from virtime.errors import (
    InvalidArgumentError,
    InvalidMppError,
    ModelMismatchError,
    OutputError,
    SlideIdError,
    VirtimeError,
)
from virtime.io.slide_folder import SlideFolder
from virtime.translation.config import TranslateConfig

__all__ = ["TranslateResult", "check_model", "check_output_root", "check_slide_mpp",
           "is_translated", "resolve_normalizer", "slide_output_dir", "translate",
           "translation_engine"]

log = logging.getLogger(__name__)

# The slide folder's file names are defined once, in virtime.io.SlideFolder.
ZARR_NAME = SlideFolder.ZARR
SUMMARY_NAME = SlideFolder.SUMMARY
TILES_NAME = SlideFolder.TILES
PARTIAL_TILES_NAME = SlideFolder.LEGACY_PARTIAL_TILES  # virtime <= #16 (still read)
PARTIAL_JOURNAL_NAME = SlideFolder.PARTIAL_TILES  # the partial tile table (translation/journal.py)
FAILED_MASK_NAME = SlideFolder.FAILED_MASK
FAILURE_COLUMN = "failure_reason"  # marks a failed tile's row in the partial tile table


#: Columns of :attr:`TranslateResult.summary`.
SUMMARY_COLUMNS = ("slide_id", "status", "skipped", "tiles_done", "tiles_failed", "seconds",
                   "model_hash", "backend", "precision", "output_dir")


@dataclass
class TranslateResult:
    """What one slide's translation produced.

    ``record`` is the slide's ``summary.json`` (status, timings, fingerprint, failed tiles,
    config, ...); :attr:`summary` is the one-row table of the main facts (it used to be the
    dict that ``record`` now is).
    """

    slide_id: str
    output_dir: Path
    skipped: bool
    tiles_done: int = 0
    tiles_failed: int = 0
    seconds: float = 0.0
    record: dict[str, Any] = field(default_factory=dict)
    #: A skipped slide whose features were recomputed (they had been made with other settings).
    features_refreshed: bool = False

    @property
    def summary(self) -> pd.DataFrame:
        """One row: slide_id, status (``done`` or ``skipped``), skipped, tiles_done,
        tiles_failed, seconds, model_hash, backend, precision, output_dir. A skipped slide's
        tiles and seconds are those of the run that made its folder."""
        r = self.record
        row = {
            "slide_id": self.slide_id,
            "status": "skipped" if self.skipped else str(r.get("status", "done")),
            "skipped": bool(self.skipped),
            "tiles_done": int(r.get("tiles_done", self.tiles_done)),
            "tiles_failed": int(r.get("tiles_failed", self.tiles_failed)),
            "seconds": float(r.get("seconds", self.seconds)),
            "model_hash": str(r.get("model_hash", "")),
            "backend": str(r.get("backend", "")),
            "precision": str(r.get("precision", "")),
            "output_dir": str(self.output_dir),
        }
        return pd.DataFrame([row], columns=list(SUMMARY_COLUMNS))


def slide_output_dir(out_root: str | os.PathLike[str], slide_id: str) -> Path:
    return Path(out_root) / slide_id


def is_translated(out_dir: str | os.PathLike[str],
                  slide_path: str | os.PathLike[str] | None = None) -> bool:
    """True when ``out_dir`` holds a finished translation: its summary says so and its outputs
    are whole (:func:`virtime.translation.integrity.damaged_outputs`: files and map chunks there).

    With ``slide_path``, only a translation of that slide file (the same content, as
    :func:`virtime.slide_ids.same_source` compares it with the summary's record) counts.
    """
    summary = _read_summary(Path(out_dir))
    if summary is None or summary.get("status") != "done":
        return False
    from virtime.translation.integrity import damaged_outputs

    if damaged_outputs(out_dir, summary) is not None:  # a lost file or chunk since
        return False
    if slide_path is None:
        return True
    from virtime.slide_ids import same_source, slide_source

    try:
        return same_source(summary.get("source"), slide_source(slide_path), slide_path)
    except OSError:
        return False


def check_model(model: Any, config: TranslateConfig) -> tuple[float, int, str]:
    """``(input mpp, window, weights hash)`` of ``model`` for ``config``: ModelMismatchError or
    InvalidArgumentError when the two do not fit (channels, mpp, a tile smaller than the window).
    Cheap: callers check before any work."""
    card = getattr(model, "card", None)
    if card is None:
        raise ModelMismatchError("model has no model card (load it with virtime.models.load)")
    if list(card.channels) != list(CHANNEL_NAMES):
        raise ModelMismatchError(
            f"model {card.weights_file or card.architecture} outputs channels {card.channels}, "
            f"not the 23 GigaTIME channels"
        )
    model_mpp = float(card.input_mpp)
    if config.model_mpp is not None and abs(config.model_mpp - model_mpp) > 0.01 * model_mpp:
        raise ModelMismatchError(
            f"model {card.weights_file or card.architecture} takes {model_mpp} um/px, "
            f"not the requested {config.model_mpp} um/px"
        )
    window = int(card.window)
    if config.tile_size % window and config.tile_size < window:
        raise InvalidArgumentError(f"tile size {config.tile_size} is smaller than the window {window}")
    return model_mpp, window, str(card.sha256)


class _JsonLog:
    """Machine-readable progress: one JSON object per line (``--log-json``)."""

    def __init__(self, path: str | None) -> None:
        self._fh = open(path, "a", encoding="utf-8") if path else None  # noqa: SIM115

    def emit(self, **event: Any) -> None:
        if self._fh:
            self._fh.write(json.dumps({"time": time.time(), **event}) + "\n")
            self._fh.flush()

    def close(self) -> None:
        if self._fh:
            self._fh.close()


def translate(
    slide: str | os.PathLike[str] | Any,
    model: Any,
    out_root: str | os.PathLike[str],
    config: TranslateConfig = TranslateConfig(),
    *,
    slide_id: str | None = None,
    engine: Any | None = None,
    embedder: Any | None = None,
    prepared: Any | None = None,
    finisher: Any | None = None,
) -> TranslateResult:
    """Translates one slide into ``out_root/<slide_id>/``.

    Parameters
    ----------
    slide
        The H&E slide: a path, or a :class:`virtime.slide.Slide` already open (used as it is,
        unless ``config.mpp`` asks for another mpp override).
    model
        A translator from :func:`virtime.models.load` (its card gives mpp, window, channels).
    out_root
        Output root; the slide's folder is ``out_root/<slide_id>`` (default: :func:`virtime.slide_ids.slide_id_from_path`).
    config
        See :class:`TranslateConfig`.
    engine
        An engine to reuse across slides (as cohort workers do); built from ``model`` otherwise.
    embedder
        A :class:`virtime.embed.joint.TileEmbedder`: Prov-GigaPath tile embeddings from the same
        tile reads, written to ``<slide folder>/embeddings``. The slide is then translated from
        the start (embeddings of an interrupted run's tiles are not kept).
    prepared
        This slide opened and its tissue detected ahead of time by a
        :class:`virtime.translation.prefetch.SlidePrefetcher` (used only when it is this path
        opened with ``config.mpp``), so the GPU does not wait between slides.
    finisher
        A ``concurrent.futures.Executor``: the slide's finishing writes (tile table, masks,
        thumbnail, features, page, summary) run on it once the tile loop is done, and a
        ``Future`` of the result is returned at once, so the next slide's loop can start (the
        slide folder stays locked until they are done). :func:`translate_slides` does this.

    Notes
    -----
    The slide id is :func:`virtime.slide_ids.slide_id_from_path` unless given. The slide folder
    is locked for the run (:mod:`virtime.translation.lock`). A finished folder is skipped only
    when it was made from the same slide file (size and header hash) with the same fingerprint
    (:mod:`virtime.translation.fingerprint`); another fingerprint is redone with a warning, and
    another slide file is a :class:`~virtime.errors.SlideIdError` unless ``force``. An
    interrupted run resumes only with an identical fingerprint; otherwise it starts fresh, with a
    warning naming the fields that differ. A slide mpp outside ``config.mpp_range`` or too coarse
    for the model is refused (see :class:`TranslateConfig`). Errors writing the outputs (read-only
    folder, full disk) are :class:`~virtime.errors.OutputError` naming the path.
    """
    from virtime.slide import Slide
    from virtime.slide_ids import slide_id_from_path, slide_source, validate_slide_id
    from virtime.stitch.windows import output_factor
    from virtime.translation.lock import SlideLock

    t_start = time.perf_counter()
    opened = slide if isinstance(slide, Slide) else None
    slide_path = Path(opened.path if opened is not None else slide)
    if opened is not None and config.mpp is not None and opened._mpp_override != config.mpp:
        opened = None  # reopened below with the configured mpp
    slide_id = (validate_slide_id(slide_id, slide_path) if slide_id is not None
                else slide_id_from_path(slide_path))
    out = slide_output_dir(out_root, slide_id)
    model_mpp, _, _ = check_model(model, config)
    output_factor(model_mpp, config.output_mpp)  # refuse bad geometry before writing anything
    if prepared is not None and not prepared.fits(slide_path, config.mpp):
        prepared = None
    if opened is not None:
        slide = opened
    else:
        slide = prepared.slide if prepared is not None else Slide(slide_path, mpp=config.mpp)
    check_slide_mpp(slide, config, model_mpp)
    try:
        source = slide_source(slide_path)
        check_output_root(out_root)
        out.mkdir(parents=True, exist_ok=True)
        lock = SlideLock(out, str(slide_path)).acquire(config.lock_timeout)
    except OSError as exc:
        if isinstance(exc, VirtimeError):
            raise
        raise OutputError.from_os_error(exc, out) from exc
    deferred = False
    try:
        done = _translate_locked(slide, slide_path, slide_id, model, out, config, engine,
                                 embedder, source, t_start,
                                 None if prepared is None else prepared.tissue,
                                 defer_finish=finisher is not None)
        if isinstance(done, TranslateResult):
            return done
        deferred = True  # the finisher releases the lock once the slide's outputs are written
        return finisher.submit(_finish_and_release, done, lock, out)
    except OSError as exc:
        if isinstance(exc, VirtimeError):
            raise
        raise OutputError.from_os_error(exc, out) from exc
    finally:
        if not deferred:
            lock.release()


def _finish_and_release(run: Any, lock: Any, out: Path) -> TranslateResult:
    """A slide's finishing writes (:meth:`SlideRun.finish`), then its folder's lock released."""
    try:
        return run.finish()
    except OSError as exc:
        if isinstance(exc, VirtimeError):
            raise
        raise OutputError.from_os_error(exc, out) from exc
    finally:
        lock.release()


def translation_engine(model: Any, config: TranslateConfig, device: str | None = None) -> Any:
    """The engine :func:`translate` builds for ``model`` and ``config`` (``device`` overrides
    ``config.device``): build it once and pass it as ``engine=`` to translate several slides
    without rebuilding it (CUDA graphs, ``torch.compile`` and TensorRT plans are per engine)."""
    from virtime.engines import create_engine

    return create_engine(model, backend=config.backend, precision=config.precision,
                         device=config.device if device is None else device,
                         cache_dir=config.cache_dir, max_batch=config.window_batch,
                         window=int(model.card.window), **config.engine_options)


def check_output_root(out_root: str | os.PathLike[str]) -> None:
    """Refuse an output root that exists and is not a folder (``-o`` naming a file), or that
    cannot be written (the folder, or the nearest existing one above it, is read-only)."""
    root = Path(out_root)
    if root.exists() and not root.is_dir():
        raise OutputError(f"{root}: exists and is not a folder (the output root must be a folder)")
    for folder in (root.absolute(), *root.absolute().parents):  # nearest existing folder
        if folder.exists():
            if not folder.is_dir():
                raise OutputError(f"{folder}: is a file, not a folder (in the output path {root})")
            if not os.access(folder, os.W_OK | os.X_OK):
                raise OutputError(f"{folder}: Permission denied (the output folder is not "
                                  f"writable)")
            break


def check_slide_mpp(slide: Any, config: TranslateConfig, model_mpp: float) -> float:
    """The slide's level-0 mpp, refused when implausible or too coarse for the model.

    A value from the slide's metadata must lie in ``config.mpp_range`` (an explicit
    ``config.mpp`` is the user's word and skips this check); the upsampling factor
    ``slide mpp / model mpp`` must not exceed ``config.max_upsample``. ``config.allow_mpp``
    skips both. Raises :class:`~virtime.errors.InvalidMppError` naming the value and its source.
    """
    mpp = float(slide.mpp)
    if config.allow_mpp:
        return mpp
    given = config.mpp is not None or getattr(slide, "_mpp_override", None) is not None
    source = "given with --mpp" if given else "from the slide metadata (openslide.mpp-x)"
    lo, hi = config.mpp_range
    if not given and not (lo <= mpp <= hi):
        raise InvalidMppError(
            f"{slide.path}: mpp {mpp:g} um/px {source} is outside the plausible range "
            f"{lo:g}-{hi:g} um/px for a slide scan (a resolution tag in the wrong unit?); pass "
            f"the true value with --mpp, or --allow-mpp to use it anyway"
        )
    factor = mpp / float(model_mpp)
    if factor > config.max_upsample:
        raise InvalidMppError(
            f"{slide.path}: mpp {mpp:g} um/px {source} is {factor:.3g}x coarser than the "
            f"model's {model_mpp:g} um/px (limit {config.max_upsample:g}x): tiles would be "
            f"upsampled {factor:.3g}x, inventing detail and multiplying the tile count by "
            f"{factor * factor:.3g}; pass --allow-mpp to translate anyway"
        )
    return mpp


def resolve_normalizer(normalize: Any) -> Any:
    """The stain normalizer ``config.normalize`` names (None for ``"none"``), or the given one.

    A normalizer object is used as it is (fitted to the user's reference); the fingerprint
    hashes that reference, so outputs of another reference are not resumed or skipped.
    """
    if isinstance(normalize, str):
        if normalize.strip().lower() == "none":
            return None
        from virtime.stain import get_normalizer

        return get_normalizer(normalize)
    if getattr(normalize, "core", None) is None:  # the identity normalizer: nothing to do
        if str(getattr(normalize, "name", "")) == "none":
            return None
        raise InvalidArgumentError(
            f"normalize={normalize!r} is not a virtime stain normalizer (virtime.stain."
            f"get_normalizer(name), fitted with .fit(reference))")
    return normalize


def _already_done(out: Path, slide_path: Path, slide_id: str, source: dict[str, Any],
                  requested: dict[str, Any],
                  config: TranslateConfig) -> tuple[TranslateResult | None, bool]:
    """``(skipped result, None)`` when ``out`` already holds this translation, else ``(None,
    fresh)``: ``fresh`` when a finished folder made with other settings is to be redone.

    Raises :class:`~virtime.errors.SlideIdError` when ``out`` (finished or partial) belongs to
    a different slide file, unless ``config.force``.
    """
    from virtime.slide_ids import IDENTITY_FIELDS, same_source
    from virtime.stitch.canvas import canvas_fingerprint
    from virtime.translation.fingerprint import fingerprint_diff, format_diff

    summary = _read_summary(out)
    if summary is not None:
        recorded = summary.get("source")
    else:
        fp = canvas_fingerprint(out / ZARR_NAME) or {}
        recorded = ({"path": None, "size": fp.get("slide_size"),
                     "head_sha256": fp.get("slide_head_sha256"),
                     "sampled_sha256": fp.get("slide_sampled_sha256")}
                    if fp.get("slide_head_sha256") else None)
    same = bool(recorded) and same_source(recorded, source, slide_path)
    if recorded and not same and not config.force:
        if summary is not None and recorded.get("path") == source["path"]:  # changed in place
            log.warning("%s: the slide file changed since it was translated into %s (its size "
                        "or content differs from the record); translating it again",
                        slide_path, out)
            return None, True
        what = recorded.get("path") or (f"a different slide file ({recorded.get('size')} bytes, "
                                        f"partial output)")
        raise SlideIdError(
            f"{out}: holds the output of {what}, not of {slide_path} (a different file with the "
            f"same slide id {slide_id!r}); use another output folder or an explicit slide id, "
            f"or --force to replace it"
        )
    if summary is None or summary.get("status") != "done" or config.force:
        return None, False
    if config.cells and not (out / SlideFolder.CELLS).is_file():  # done, but without cells
        log.warning("%s: redoing %s to add the cell table (--cells)", slide_path, out)
        return None, True
    # The slide file's identity was compared above (same_source); the rest must match.
    fields = [f for f in fingerprint_diff(summary.get("fingerprint"), requested, requested=True)
              if f not in IDENTITY_FIELDS]
    if fields or not recorded:
        log.warning("%s: redoing the finished translation in %s, it was made with other settings: "
                    "%s", slide_path, out,
                    format_diff(summary.get("fingerprint"), requested, fields))
        return None, True
    from virtime.translation.integrity import damaged_outputs

    damage = damaged_outputs(out, summary)
    if damage is not None:  # done once, but a file or chunk was lost since: repair it
        log.warning("%s: the finished outputs in %s are damaged (%s); translating the slide "
                    "again to repair them", slide_path, out, damage)
        return None, True
    failed = int(summary.get("tiles_failed") or 0)
    if config.retry_failed and failed:
        # Neighbouring tiles blend into the same canvas pixels, so a failed tile cannot be
        # patched into a finished canvas alone: the slide is translated again (same settings,
        # so every tile that succeeded comes out the same) and its failures recorded anew.
        log.warning("%s: retrying %d failed tile(s) of %s: translating the slide again",
                    slide_path, failed, out)
        return None, True
    settings = config.slide_features.as_kwargs()
    stale = _stale_features(out, config)
    if stale is not None:  # the canvas is this translation's: recompute only the features
        log.info("%s: already translated in %s; recomputing only its features with %s (%s)",
                 slide_path, out, ", ".join(f"{k}={v}" for k, v in settings.items()), stale)
        from virtime.features import features_from_outputs
        from virtime.slide import Slide
        from virtime.view.page import write_slide_page  # the slide page shows the features

        features_from_outputs(out, **settings)
        write_slide_page(out, slide=Slide(slide_path, mpp=summary.get("slide_mpp")))
    recorded_config = summary.get("config") or {}
    noted = {"features": True, **settings} if config.features else {}
    touched = recorded.get("mtime_ns") != source.get("mtime_ns")  # same content, touched/copied
    if any(recorded_config.get(k) != v for k, v in noted.items()) or touched:
        from virtime.io import atomic_write_json

        # summary.json says the settings, and the file's new time (its content was verified,
        # so the next check is cheap again)
        summary = {**summary, "config": {**recorded_config, **noted},
                   "source": {**recorded, "mtime_ns": source.get("mtime_ns")}}
        atomic_write_json(out / SUMMARY_NAME, summary)
    log.info("%s: already translated in %s; skipping (use force to redo)", slide_path, out)
    return TranslateResult(slide_id, out, skipped=True, record=summary,
                           features_refreshed=stale is not None), False


def _stale_features(out: Path, config: TranslateConfig) -> str | None:
    """Why the slide features in ``out`` are not those ``config`` asks for, or None.

    The features settings (``config.slide_features``) are not in the translation fingerprint
    (they do not change the canvas), so a finished folder can hold features made with other
    settings; ``features.parquet``'s metadata records the ones it was made with. None when
    ``config.features`` is off or the table matches.
    """
    if not config.features:
        return None
    path = out / SlideFolder.FEATURES
    if not path.is_file():
        return "no features.parquet"
    from virtime.features import read_features

    try:
        made = json.loads(read_features(path)[1].get("features.settings", "null"))
    except (VirtimeError, ValueError) as exc:
        return f"features.parquet unreadable ({exc})"
    wanted = config.slide_features.as_kwargs()
    if not isinstance(made, dict):
        return "features.parquet records no settings"
    if any(made.get(k) != v for k, v in wanted.items()):
        return "features.parquet was made with " + ", ".join(f"{k}={made.get(k)}" for k in wanted)
    return None


def _read_summary(out: Path) -> dict[str, Any] | None:
    try:
        summary = json.loads((out / SUMMARY_NAME).read_text())
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) else None


def _translate_locked(slide, slide_path, slide_id, model, out, config, engine, embedder, source,
                      t_start, tissue=None, defer_finish=False) -> Any:
    """:func:`translate` once the slide folder is locked: its result, or with ``defer_finish``
    the :class:`~virtime.translation.run.SlideRun` whose :meth:`finish` is still to run (a
    skipped slide's result either way)."""
    from virtime.stitch.canvas import StreamingCanvas, canvas_shape
    from virtime.stitch.windows import output_factor, plan_windows, tile_stride, window_weight
    from virtime.tiling import make_tile_grid
    from virtime.slide_ids import content_sha256, identity_fields
    from virtime.tissue import detect_tissue
    from virtime.translation.fingerprint import translation_fingerprint

    model_mpp, window, model_hash = check_model(model, config)
    factor = output_factor(model_mpp, config.output_mpp)
    normalizer = resolve_normalizer(config.normalize)
    identity = identity_fields(source)
    # Temporary files of a killed run (e.g. the cell table's): ours to remove, the folder is locked.
    for stale in SlideFolder(out).remove_stale_partials():
        log.info("%s: removed %s, left by an interrupted run", out, stale.name)

    def fingerprint(eng: Any) -> dict[str, Any]:
        return {**translation_fingerprint(model_hash=model_hash, engine=eng, config=config,
                                          normalizer=normalizer, window=window,
                                          model_mpp=model_mpp, slide_mpp=slide.mpp), **identity}

    done, redo = _already_done(out, slide_path, slide_id, source, fingerprint(engine), config)
    if done is not None:
        return done
    t_hash = time.perf_counter()  # the whole file's hash: what a later skip check falls back on
    source = {**source, "content_sha256": content_sha256(slide_path)}
    t_hash = time.perf_counter() - t_hash
    tissue = tissue if tissue is not None else detect_tissue(slide)  # prefetched, or now
    tiling = config.tiling_for(model_mpp)
    origins = plan_windows(config.tile_size, window, config.overlap)
    weight = window_weight(window, config.overlap)
    stride = tile_stride(config.tile_size, config.overlap)
    grid = make_tile_grid(slide, tiling, tissue)
    out.mkdir(parents=True, exist_ok=True)
    if config.force:
        (out / SUMMARY_NAME).unlink(missing_ok=True)
    scale = slide.mpp / model_mpp  # model pixels per level-0 pixel
    w0, h0 = slide.dimensions
    shape = canvas_shape((int(np.ceil(h0 * scale)), int(np.ceil(w0 * scale))), factor)
    # Embeddings and cells of an interrupted run's tiles are not kept: redo the slide from the start.
    fresh = config.force or redo or embedder is not None or config.cells
    if redo:
        (out / SUMMARY_NAME).unlink(missing_ok=True)  # no longer a finished folder of this request
    owns_engine = engine is None
    if owns_engine:
        engine = translation_engine(model, config)
    canvas = None
    try:  # the canvas resumes only a partial run with this fingerprint (engine included)
        fp = fingerprint(engine)
        canvas = StreamingCanvas(
            out / ZARR_NAME, shape, factor=factor, mpp=config.output_mpp, resume=not fresh,
            name=slide_id,
            extra_metadata={"model_hash": model_hash, "slide": os.path.abspath(slide_path),
                            "overlap": config.overlap, "virtime_version": __version__,
                            "fingerprint": fp},
            fingerprint=fp, restart_on_mismatch=True,
        )
        fresh = fresh or bool(canvas.restarted_because)  # discard the other run's tile rows too
        tile_xy_model = np.rint(grid.xy * scale).astype(np.int64)
        # Resume: tiles whose whole footprint lies in finished bands were done by an earlier run.
        todo = np.flatnonzero(tile_xy_model[:, 1] + config.tile_size > canvas.resume_y)
        previous = _load_partial_tiles(out, fresh)
        jlog = _JsonLog(config.log_json)
    except BaseException:
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
    timings["slide_hash"] = t_hash
    # Rows of tiles that lie wholly in finished bands are kept; every tile reaching an unfinished
    # band is recomputed (its canvas contribution to that band was lost with the interruption).
    redo = set(todo.tolist())
    rows: list[dict[str, Any]] = [] if previous is None else [
        r for r in previous if int(r["tile"]) not in redo]
    from virtime.translation.journal import TileJournal
    from virtime.translation.run import SlideRun

    run = SlideRun(slide, slide_path, slide_id, out, config, grid, tissue, canvas, engine,
                   normalizer, model_hash, origins, weight, stride, tile_xy_model, todo, jlog,
                   t_start, {"fingerprint": fp, "source": source}, embedder, timings=timings,
                   rows=rows, journal=TileJournal(out / PARTIAL_JOURNAL_NAME))
    cells = None
    try:
        run.journal.start(rows)  # the kept rows; the loop appends the new ones
        (out / PARTIAL_TILES_NAME).unlink(missing_ok=True)  # an older virtime's snapshot
        if embedder is not None:
            embedder.start(config.tile_size, model_mpp, len(todo),
                           str(getattr(engine, "device", "cpu")))
        if config.cells:  # virtual single cells from each tile's full-resolution probabilities
            from virtime.cells.collector import start_translation_cells

            cells = run.cells = start_translation_cells(
                grid, todo, tile_xy_model, config.tile_size, stride, origins, weight, model_mpp,
                scale, out, model_hash)
        # Batch sizes for the host memory budget (engines/memory.py; outputs unchanged). Not on
        # the device path: it holds no float tiles or logits on the host, only the bounded ring.
        from virtime.translation.device_path import use_device_path

        if len(todo) and not use_device_path(engine, config):
            from virtime.engines.memory import fit_memory_budget

            run.loop_config = fit_memory_budget(engine, config, window=window,
                                                windows_per_tile=len(origins),
                                                emit_uint8=embedder is not None)
        t_loop = time.perf_counter()
        run.run_tiles()
        timings["tile_loop_wall"] = time.perf_counter() - t_loop
        if cells is not None:  # before finish(): the slide features read cells.parquet
            cells.finish()
            timings["cells"] = cells.seconds
        if embedder is not None:
            t0 = time.perf_counter()
            embedder.finish(out / SlideFolder.EMBEDDINGS, str(slide_path), grid, slide.mpp)
            timings["embed"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        canvas.close()
        timings["write"] += time.perf_counter() - t0
        # Busy seconds of the canvas's background threads (they overlap the loop).
        timings["band_writer_thread"] = canvas.thread_seconds["band_writer"]
        timings["observer_thread"] = canvas.thread_seconds["observers"]
    except BaseException:
        canvas.abort()  # settle queued band writes so a rerun resumes from a consistent manifest
        jlog.emit(event="interrupted", slide_id=slide_id)
        raise
    finally:
        if owns_engine:
            engine.close()
        if embedder is not None:
            embedder.close()
        if cells is not None:
            cells.close()  # drops an unfinished cell table; a no-op after finish
        jlog.close()
    return run if defer_finish else run.finish()


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    import torch

    return torch.sigmoid(torch.from_numpy(np.asarray(logits, np.float32))).numpy()


def _tile_row(tile: int, grid: Any, pos: np.ndarray, mean: np.ndarray) -> dict[str, Any]:
    row: dict[str, Any] = {
        "tile": tile,
        "x": int(grid.xy[tile, 0]),
        "y": int(grid.xy[tile, 1]),
        "tissue_fraction": float(grid.tissue_fraction[tile]),
    }
    for name, p, m in zip(CHANNEL_NAMES, pos, mean):
        row[f"{name}.positive_fraction"] = float(p)
        row[f"{name}.mean_probability"] = float(m)
    return row


def _load_partial_tiles(out: Path, force: bool) -> list[dict[str, Any]] | None:
    """The tile rows an interrupted run recorded: its journal or, from a run of an older
    virtime, its Parquet snapshot."""
    if force:
        return None
    journal = out / PARTIAL_JOURNAL_NAME
    if journal.is_file():
        from virtime.translation.journal import read_journal

        return read_journal(journal)
    path = out / PARTIAL_TILES_NAME
    return pd.read_parquet(path).to_dict("records") if path.is_file() else None


def _failure_row(failure: dict[str, Any]) -> dict[str, Any]:
    """A failed tile's row in the partial tile table (so an interrupted run's failures survive)."""
    return {"tile": failure["tile"], "x": failure["x"], "y": failure["y"],
            FAILURE_COLUMN: failure["reason"]}


def _split_failures(
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


def _failed_on_canvas(grid: Any, failures: list[dict[str, Any]], table: pd.DataFrame,
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


def _save_mask(path: Path, mask: np.ndarray) -> None:
    from virtime.io import atomic_path

    with atomic_path(path) as tmp, open(tmp, "wb") as fh:  # unique name, removed on failure
        np.save(fh, mask)


def _mask_on_canvas(mask: np.ndarray, shape_yx: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resampling of the tissue mask onto the canvas grid."""
    h, w = shape_yx
    rows = np.minimum((np.arange(h) * mask.shape[0]) // max(h, 1), mask.shape[0] - 1)
    cols = np.minimum((np.arange(w) * mask.shape[1]) // max(w, 1), mask.shape[1] - 1)
    return mask[rows][:, cols].astype(bool)


def _write_thumbnail(slide: Any, out: Path, config: TranslateConfig,
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
        thumbnail_from_zarr(out / ZARR_NAME, he, config.thumbnail_channels,
                            png_path=out / SlideFolder.THUMBNAIL)
    return kept[-1] if kept else None
