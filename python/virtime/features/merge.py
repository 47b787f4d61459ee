"""The one merge of per-slide features into a cohort table (``features --merge``, ``cohort merge``).

``virtime features --merge OUT``, ``virtime cohort merge OUT`` and the end of ``virtime cohort
run`` all call :func:`merge_features`: one row per slide, read from ``OUT/<slide_id>/
features.parquet``, written atomically with the virtime version, the model hash(es) and the
feature settings in the Parquet metadata, like a single slide's table. The statistics commands
read the result directly.

Only finished translations are merged: a folder whose ``summary.json`` does not say done (an
interrupted or running ``translate``, e.g. a ``--force`` rerun that was killed, which leaves the
previous model's ``features.parquet`` behind) or whose ``features.parquet`` was made from another
model than its translation is left out, named with its reason in one log line and in the
table's ``virtime.merge.left_out`` metadata (JSON ``{slide_id: reason}``). Finished slides of
different models are refused: their features are not comparable.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from virtime.errors import InputDataError, VirtimeWarning
from virtime.io import SlideFolder

__all__ = ["COHORT_FEATURES_NAME", "merge_features"]

log = logging.getLogger(__name__)

#: The cohort table's default name, in the output root (a reserved slide id in cohort runs).
COHORT_FEATURES_NAME = "cohort_features.parquet"


def merge_features(
    out_root: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    *,
    slide_ids: Iterable[str] | None = None,
    ledger: Any = None,
) -> Path:
    """Joins the ``features.parquet`` of the finished slides under ``out_root`` into one table.

    Parameters
    ----------
    out_root
        An output root holding one folder per translated slide.
    output
        Where to write; default ``out_root/cohort_features.parquet``.
    slide_ids
        Merge only these slide folders (each must have ``features.parquet``).
    ledger
        A cohort ledger (DataFrame with ``slide_id``, ``patient_id``, ``status``): merge its
        ``done`` and ``skipped`` slides, ``slide_id`` and ``patient_id`` first; finished slides
        without features are warned about. Without ``slide_ids`` and ``ledger`` every
        ``*/features.parquet`` is merged, each identified by its own ``slide_id`` column.

    Returns
    -------
    Path
        The table written.

    A folder whose ``summary.json`` does not say done, or whose features come from another model
    than its translation, is left out: one warning line names each with its reason, and the
    table's ``virtime.merge.left_out`` metadata keeps them (JSON ``{slide_id: reason}``), so a
    stale table from an interrupted rerun is never merged silently.

    Raises InputDataError (one line naming the path) when there is nothing to merge, the finished
    slides come from different models (their features are not comparable), a ``slide_id``
    repeats, a table has no ``slide_id``, ``output`` is a folder (e.g. a slide folder named like
    the cohort table) or cannot be written; nothing is written then. Differing feature settings
    are allowed but warned about (VirtimeWarning).
    """
    import pandas as pd

    from virtime.features.table import FEATURES_FILE, read_features, write_features

    root = Path(out_root)
    target = Path(output) if output is not None else root / COHORT_FEATURES_NAME
    if target.is_dir():
        raise InputDataError(f"{target}: is a directory (a slide folder with this name?); "
                             f"write the cohort table elsewhere with -o")
    folders, patients = _candidate_folders(root, slide_ids, ledger)
    frames, hashes, settings, missing = [], {}, [], []
    left_out: dict[str, str] = {}
    for folder in folders:
        if not folder.features_file.is_file():
            if ledger is None:
                raise InputDataError(f"{folder.features_file}: not found (translated with "
                                     f"--no-features?)")
            missing.append(folder.slide_id)
            continue
        df, meta = read_features(folder.features_file)
        why = _why_left_out(folder, meta.get("model_hash", ""))
        if why:
            left_out[folder.slide_id] = why
            continue
        if ledger is not None:
            df = df.drop(columns=[c for c in ("slide_id", "patient_id") if c in df.columns])
            df.insert(0, "patient_id", patients[folder.slide_id])
            df.insert(0, "slide_id", folder.slide_id)
        elif "slide_id" not in df.columns:
            raise InputDataError(f"{folder.features_file}: no 'slide_id' column")
        frames.append(df)
        hashes.setdefault(meta.get("model_hash", ""), []).append(folder.slide_id)
        settings.append(meta.get("features.settings", "{}"))
    if left_out:
        log.warning("%s: left out %d unfinished or stale slide folder(s): %s", root,
                    len(left_out), "; ".join(f"{k} ({v})" for k, v in left_out.items()))
    if missing:
        warnings.warn(f"{root}: {len(missing)} finished slides have no {FEATURES_FILE} "
                      f"(translated with --no-features?): {missing[:5]}", VirtimeWarning,
                      stacklevel=2)
    if not frames:
        raise InputDataError(f"{root}: no finished slide with {FEATURES_FILE} to merge"
                             + (f" ({len(left_out)} left out: {_first(left_out)})"
                                if left_out else ""))
    _refuse_mixed_models(root, hashes)
    cohort = pd.concat(frames, ignore_index=True, sort=False)
    dup = cohort["slide_id"][cohort["slide_id"].duplicated()].tolist()
    if dup:
        raise InputDataError(f"{root}: slide_id repeated: {dup[:5]}")
    if len(set(settings)) > 1:
        warnings.warn(f"{root}: merging slides computed with different feature settings",
                      VirtimeWarning, stacklevel=2)
    log.info("merged the features of %d slides into %s", len(cohort), target)
    try:
        return write_features(cohort.to_dict("records"), target, model_hash=next(iter(hashes)),
                              settings=json.loads(settings[0]) if len(set(settings)) == 1 else {},
                              metadata={"merge.left_out": json.dumps(left_out)})
    except OSError as exc:  # read-only folder, full disk, missing parent: the write is atomic
        raise InputDataError(f"{target}: cannot write the cohort table: "
                             f"{exc.strerror or exc}") from exc


def _candidate_folders(root: Path, slide_ids: Iterable[str] | None,
                       ledger: Any) -> tuple[list[SlideFolder], dict[str, Any]]:
    """The slide folders to consider, and ``slide_id -> patient_id`` from the ledger (if any)."""
    from virtime.features.table import FEATURES_FILE

    if ledger is not None:
        finished = ledger[ledger["status"].isin(["done", "skipped"])]
        patients = dict(zip(finished["slide_id"], finished["patient_id"]))
        return [SlideFolder.of(root, sid) for sid in patients], patients
    if slide_ids is not None:
        return [SlideFolder.of(root, sid) for sid in slide_ids], {}
    folders = [SlideFolder(p.parent) for p in sorted(root.glob(f"*/{FEATURES_FILE}"))]
    if not folders:
        raise InputDataError(f"{root}: no */{FEATURES_FILE} to merge")
    return folders, {}


def _why_left_out(folder: SlideFolder, features_hash: str) -> str:
    """Why the features of ``folder`` must not be merged ("" when they may).

    Its translation must have finished (``summary.json`` says done: a killed ``--force`` rerun
    removes the summary but leaves the earlier model's features), and its features must come
    from the model that translation used.
    """
    try:
        summary = folder.summary()
    except InputDataError:
        return ("not finished: summary.json missing or unreadable (an interrupted or running "
                "translation)")
    if summary.get("status") != "done":
        return f"not finished: summary.json status {summary.get('status')!r}"
    translated = str(summary.get("model_hash") or "")
    if translated and features_hash != translated:
        return (f"stale: features.parquet is from model {features_hash[:12] or '?'}, the "
                f"translation from {translated[:12]} (rerun virtime features on it)")
    return ""


def _refuse_mixed_models(root: Path, hashes: dict[str, list[str]]) -> None:
    """One line naming the models and a few of their slides when there is more than one."""
    if len(hashes) <= 1:
        return
    parts = [f"{h[:12] or '?'}: {len(ids)} ({', '.join(ids[:3])}{', ...' if len(ids) > 3 else ''})"
             for h, ids in sorted(hashes.items(), key=lambda kv: -len(kv[1]))]
    raise InputDataError(f"{root}: finished slides come from {len(hashes)} different models "
                         f"({'; '.join(parts)}); their features are not comparable: translate "
                         f"them all with one model, or merge each model's slides apart "
                         f"(merge_features(OUT, slide_ids=...))")


def _first(reasons: dict[str, str], n: int = 3) -> str:
    items = list(reasons.items())
    text = "; ".join(f"{k} ({v})" for k, v in items[:n])
    return text + ("; ..." if len(items) > n else "")
