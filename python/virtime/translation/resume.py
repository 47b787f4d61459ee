"""When a slide folder is skipped, redone or resumed: the rules a rerun applies to what it finds.

A finished folder (``summary.json`` says ``done``) is skipped only when it was made from the same
slide file (:mod:`virtime.slide_ids`) with the same fingerprint
(:mod:`virtime.translation.fingerprint`) and its outputs are whole; a finished folder made with
other settings, damaged since, without the cells ``--cells`` asks for, or with failed tiles and
``retry_failed``, is translated again (a warning says why). A folder of another slide file is an
error unless ``force``. A skipped folder whose features were made with other feature settings
gets only its features recomputed. An interrupted run's tile rows (its journal) are what a resume
keeps of the tiles in finished canvas bands.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from virtime.errors import SlideIdError, VirtimeError
from virtime.io.slide_folder import SlideFolder
from virtime.translation.config import TranslateConfig
from virtime.translation.result import TranslateResult

__all__ = ["already_done", "is_translated", "kept_rows", "load_partial_tiles", "read_summary",
           "requested_fingerprint", "stale_features"]

log = logging.getLogger(__name__)


def read_summary(out: Path) -> dict[str, Any] | None:
    """The slide folder's ``summary.json`` as a dict, or None (missing, unreadable, not a dict)."""
    return SlideFolder(out).summary_or_none()


def is_translated(out_dir: str | os.PathLike[str],
                  slide_path: str | os.PathLike[str] | None = None) -> bool:
    """True when ``out_dir`` holds a finished translation: its summary says so and its outputs
    are whole (:func:`virtime.translation.integrity.damaged_outputs`: files and map chunks there).

    With ``slide_path``, only a translation of that slide file (the same content, as
    :func:`virtime.slide_ids.same_source` compares it with the summary's record) counts.
    """
    summary = read_summary(Path(out_dir))
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


def requested_fingerprint(engine: Any, *, model_hash: str, config: TranslateConfig,
                          normalizer: Any, window: int, model_mpp: float, slide_mpp: float,
                          identity: dict[str, Any]) -> dict[str, Any]:
    """The fingerprint a translation with ``engine`` (None: the requested engine fields) would
    record, with the slide file's identity fields."""
    from virtime.translation.fingerprint import translation_fingerprint

    return {**translation_fingerprint(model_hash=model_hash, engine=engine, config=config,
                                      normalizer=normalizer, window=window, model_mpp=model_mpp,
                                      slide_mpp=slide_mpp), **identity}


def already_done(out: Path, slide_path: Path, slide_id: str, source: dict[str, Any],
                 requested: dict[str, Any],
                 config: TranslateConfig) -> tuple[TranslateResult | None, bool]:
    """``(skipped result, False)`` when ``out`` already holds this translation, else ``(None,
    fresh)``: ``fresh`` when a finished folder made with other settings is to be redone.

    Raises :class:`~virtime.errors.SlideIdError` when ``out`` (finished or partial) belongs to
    a different slide file, unless ``config.force``.
    """
    from virtime.slide_ids import same_source

    summary = read_summary(out)
    recorded = _recorded_source(out, summary)
    same = bool(recorded) and same_source(recorded, source, slide_path)
    if recorded and not same and not config.force:
        _refuse_other_slide(out, slide_path, slide_id, summary, recorded, source)
        return None, True  # the same path, changed in place: translated again
    if summary is None or summary.get("status") != "done" or config.force:
        return None, False
    if _redo_finished(out, slide_path, summary, recorded, requested, config):
        return None, True
    return _skip_finished(out, slide_path, slide_id, summary, recorded, source, config), False


def _recorded_source(out: Path, summary: dict[str, Any] | None) -> dict[str, Any] | None:
    """The slide file a folder was made from: its summary's record, or (partial output) the
    identity its canvas manifest recorded."""
    if summary is not None:
        return summary.get("source")
    from virtime.stitch.canvas import canvas_fingerprint

    fp = canvas_fingerprint(out / SlideFolder.ZARR) or {}
    return ({"path": None, "size": fp.get("slide_size"),
             "head_sha256": fp.get("slide_head_sha256"),
             "sampled_sha256": fp.get("slide_sampled_sha256")}
            if fp.get("slide_head_sha256") else None)


def _refuse_other_slide(out: Path, slide_path: Path, slide_id: str,
                        summary: dict[str, Any] | None, recorded: dict[str, Any],
                        source: dict[str, Any]) -> None:
    """A folder made from another slide file: a warning when the same path changed in place
    (the caller translates it again), else :class:`~virtime.errors.SlideIdError`."""
    if summary is not None and recorded.get("path") == source["path"]:  # changed in place
        log.warning("%s: the slide file changed since it was translated into %s (its size "
                    "or content differs from the record); translating it again",
                    slide_path, out)
        return
    what = recorded.get("path") or (f"a different slide file ({recorded.get('size')} bytes, "
                                    f"partial output)")
    raise SlideIdError(
        f"{out}: holds the output of {what}, not of {slide_path} (a different file with the "
        f"same slide id {slide_id!r}); use another output folder or an explicit slide id, "
        f"or --force to replace it"
    )


def _redo_finished(out: Path, slide_path: Path, summary: dict[str, Any],
                   recorded: dict[str, Any] | None, requested: dict[str, Any],
                   config: TranslateConfig) -> bool:
    """Whether a finished folder of this slide file is translated again (a warning says why):
    no cell table for ``--cells``, other settings, damaged outputs, or failed tiles to retry."""
    from virtime.slide_ids import IDENTITY_FIELDS
    from virtime.translation.fingerprint import fingerprint_diff, format_diff

    if config.cells and not (out / SlideFolder.CELLS).is_file():  # done, but without cells
        log.warning("%s: redoing %s to add the cell table (--cells)", slide_path, out)
        return True
    # The slide file's identity was compared already (same_source); the rest must match.
    fields = [f for f in fingerprint_diff(summary.get("fingerprint"), requested, requested=True)
              if f not in IDENTITY_FIELDS]
    if fields or not recorded:
        log.warning("%s: redoing the finished translation in %s, it was made with other settings: "
                    "%s", slide_path, out,
                    format_diff(summary.get("fingerprint"), requested, fields))
        return True
    from virtime.translation.integrity import damaged_outputs

    damage = damaged_outputs(out, summary)
    if damage is not None:  # done once, but a file or chunk was lost since: repair it
        log.warning("%s: the finished outputs in %s are damaged (%s); translating the slide "
                    "again to repair them", slide_path, out, damage)
        return True
    failed = int(summary.get("tiles_failed") or 0)
    if config.retry_failed and failed:
        # Neighbouring tiles blend into the same canvas pixels, so a failed tile cannot be
        # patched into a finished canvas alone: the slide is translated again (same settings,
        # so every tile that succeeded comes out the same) and its failures recorded anew.
        log.warning("%s: retrying %d failed tile(s) of %s: translating the slide again",
                    slide_path, failed, out)
        return True
    return False


def _skip_finished(out: Path, slide_path: Path, slide_id: str, summary: dict[str, Any],
                   recorded: dict[str, Any], source: dict[str, Any],
                   config: TranslateConfig) -> TranslateResult:
    """The skipped slide's result; its features recomputed first when they were made with other
    settings, and its summary updated with the feature settings and the file's new time."""
    settings = config.slide_features.as_kwargs()
    stale = stale_features(out, config)
    if stale is not None:  # the canvas is this translation's: recompute only the features
        log.info("%s: already translated in %s; recomputing only its features with %s (%s)",
                 slide_path, out, ", ".join(f"{k}={v}" for k, v in settings.items()), stale)
        from virtime.translation.outputs import refresh_features

        refresh_features(out, slide_path, summary, settings)
    recorded_config = summary.get("config") or {}
    noted = {"features": True, **settings} if config.features else {}
    touched = recorded.get("mtime_ns") != source.get("mtime_ns")  # same content, touched/copied
    if any(recorded_config.get(k) != v for k, v in noted.items()) or touched:
        from virtime.io import atomic_write_json

        # summary.json says the settings, and the file's new time (its content was verified,
        # so the next check is cheap again)
        summary = {**summary, "config": {**recorded_config, **noted},
                   "source": {**recorded, "mtime_ns": source.get("mtime_ns")}}
        atomic_write_json(out / SlideFolder.SUMMARY, summary)
    log.info("%s: already translated in %s; skipping (use force to redo)", slide_path, out)
    return TranslateResult(slide_id, out, skipped=True, record=summary,
                           features_refreshed=stale is not None)


def stale_features(out: Path, config: TranslateConfig) -> str | None:
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


def load_partial_tiles(out: Path, force: bool) -> list[dict[str, Any]] | None:
    """The tile rows an interrupted run recorded: its journal or, from a run of an older
    virtime, its Parquet snapshot (None with ``force``)."""
    if force:
        return None
    journal = out / SlideFolder.PARTIAL_TILES
    if journal.is_file():
        from virtime.translation.journal import read_journal

        return read_journal(journal)
    path = out / SlideFolder.LEGACY_PARTIAL_TILES
    return pd.read_parquet(path).to_dict("records") if path.is_file() else None


def kept_rows(previous: list[dict[str, Any]] | None, todo: np.ndarray) -> list[dict[str, Any]]:
    """Rows of an interrupted run that a resume keeps: those of tiles wholly in finished bands
    (every tile in ``todo`` reaches an unfinished band and is recomputed: its canvas
    contribution to that band was lost with the interruption)."""
    redo = set(todo.tolist())
    return [] if previous is None else [r for r in previous if int(r["tile"]) not in redo]
