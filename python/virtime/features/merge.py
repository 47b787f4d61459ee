"""The one merge of per-slide features into a cohort table (``features --merge``, ``cohort merge``).

``virtime features --merge OUT``, ``virtime cohort merge OUT`` and the end of ``virtime cohort
run`` all call :func:`merge_features`: one row per slide, read from ``OUT/<slide_id>/
features.parquet``, written atomically with the virtime version, the model hash(es) and the
feature settings in the Parquet metadata, like a single slide's table. The statistics commands
read the result directly.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from virtime.errors import InputDataError
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
    """Joins the ``features.parquet`` of the slides under ``out_root`` into one table.

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

    Raises InputDataError (one line naming the path) when there is nothing to merge, a
    ``slide_id`` repeats, a table has no ``slide_id``, ``output`` is a folder (e.g. a slide
    folder named like the cohort table) or cannot be written; nothing is written then.
    Differing model hashes or feature settings are allowed but warned about (UserWarning); all
    hashes are recorded, ``;``-joined.
    """
    import pandas as pd

    from virtime.features.table import FEATURES_FILE, read_features, write_features

    root = Path(out_root)
    target = Path(output) if output is not None else root / COHORT_FEATURES_NAME
    if target.is_dir():
        raise InputDataError(f"{target}: is a directory (a slide folder with this name?); "
                             f"write the cohort table elsewhere with -o")
    patients: dict[str, Any] = {}
    if ledger is not None:
        finished = ledger[ledger["status"].isin(["done", "skipped"])]
        patients = dict(zip(finished["slide_id"], finished["patient_id"]))
        folders = [SlideFolder.of(root, sid) for sid in patients]
    elif slide_ids is not None:
        folders = [SlideFolder.of(root, sid) for sid in slide_ids]
    else:
        folders = [SlideFolder(p.parent) for p in sorted(root.glob(f"*/{FEATURES_FILE}"))]
        if not folders:
            raise InputDataError(f"{root}: no */{FEATURES_FILE} to merge")
    frames, hashes, settings, missing = [], [], [], []
    for folder in folders:
        if not folder.features.is_file():
            if ledger is None:
                raise InputDataError(f"{folder.features}: not found (translated with "
                                     f"--no-features?)")
            missing.append(folder.slide_id)
            continue
        df, meta = read_features(folder.features)
        if ledger is not None:
            df = df.drop(columns=[c for c in ("slide_id", "patient_id") if c in df.columns])
            df.insert(0, "patient_id", patients[folder.slide_id])
            df.insert(0, "slide_id", folder.slide_id)
        elif "slide_id" not in df.columns:
            raise InputDataError(f"{folder.features}: no 'slide_id' column")
        frames.append(df)
        hashes.append(meta.get("model_hash", ""))
        settings.append(meta.get("features.settings", "{}"))
    if missing:
        warnings.warn(f"{root}: {len(missing)} finished slides have no {FEATURES_FILE} "
                      f"(translated with --no-features?): {missing[:5]}", UserWarning,
                      stacklevel=2)
    if not frames:
        raise InputDataError(f"{root}: no finished slide with {FEATURES_FILE} to merge")
    cohort = pd.concat(frames, ignore_index=True, sort=False)
    dup = cohort["slide_id"][cohort["slide_id"].duplicated()].tolist()
    if dup:
        raise InputDataError(f"{root}: slide_id repeated: {dup[:5]}")
    uniq = sorted(set(hashes))
    if len(uniq) > 1:
        warnings.warn(f"{root}: merging slides from {len(uniq)} different models", UserWarning,
                      stacklevel=2)
    if len(set(settings)) > 1:
        warnings.warn(f"{root}: merging slides computed with different feature settings",
                      UserWarning, stacklevel=2)
    log.info("merged the features of %d slides into %s", len(cohort), target)
    try:
        return write_features(cohort.to_dict("records"), target, model_hash=";".join(uniq),
                              settings=json.loads(settings[0]) if len(set(settings)) == 1 else {})
    except OSError as exc:  # read-only folder, full disk, missing parent: the write is atomic
        raise InputDataError(f"{target}: cannot write the cohort table: "
                             f"{exc.strerror or exc}") from exc
