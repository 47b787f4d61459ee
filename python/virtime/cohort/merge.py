"""The cohort features table: every finished slide's features joined with its patient.

One row per slide (``done`` or ``skipped`` in the ledger) with ``slide_id`` and ``patient_id``
first, then the feature columns of ``OUT/<slide_id>/features.parquet``; the statistics commands
read it directly (they aggregate slides per patient). Written atomically with the virtime version,
model hash(es) and feature settings in the Parquet metadata, like a single slide's table.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import pandas as pd

from virtime.errors import InputDataError

__all__ = ["COHORT_FEATURES_NAME", "merge_cohort_features"]

log = logging.getLogger(__name__)

COHORT_FEATURES_NAME = "cohort_features.parquet"


def merge_cohort_features(
    out_root: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    *,
    ledger: pd.DataFrame | None = None,
) -> Path:
    """Joins the features of every finished slide of a cohort run into one table.

    Parameters
    ----------
    out_root
        The cohort's output root (holds the ledger and one folder per slide).
    output
        Where to write; default ``OUT/cohort_features.parquet``.
    ledger
        The ledger table (read from ``out_root`` when not given).

    Raises InputDataError (one line naming the path) when ``out_root`` is not a cohort output
    folder, its ledger cannot be read, ``output`` is a folder (e.g. a slide folder named like
    the cohort table) or no finished slide has features; nothing is written then.
    """
    import json

    from virtime.cohort.ledger import read_ledger
    from virtime.features.table import FEATURES_FILE, read_features, write_features

    root = Path(out_root)
    if ledger is None:
        if not root.is_dir():
            raise InputDataError(f"{root}: not a cohort output folder "
                                 f"({'not found' if not root.exists() else 'not a directory'})")
        try:
            table = read_ledger(root)
        except FileNotFoundError as exc:
            raise InputDataError(f"{root}: not a cohort output folder (no cohort ledger; run "
                                 f"`virtime cohort run` first)") from exc
        except Exception as exc:  # a damaged ledger: pyarrow/json errors vary
            raise InputDataError(f"{root}: cannot read the cohort ledger: "
                                 f"{' '.join(str(exc).split())[:200]}") from exc
    else:
        table = ledger
    target = Path(output) if output is not None else root / COHORT_FEATURES_NAME
    if target.is_dir():
        raise InputDataError(f"{target}: is a directory (a slide folder with this name?); "
                             f"write the cohort table elsewhere with -o")
    finished = table[table["status"].isin(["done", "skipped"])]
    frames, hashes, settings, missing = [], [], [], []
    for sid, patient in zip(finished["slide_id"], finished["patient_id"]):
        path = root / sid / FEATURES_FILE
        if not path.is_file():
            missing.append(sid)
            continue
        df, meta = read_features(path)
        df = df.drop(columns=[c for c in ("slide_id", "patient_id") if c in df.columns])
        df.insert(0, "patient_id", patient)
        df.insert(0, "slide_id", sid)
        frames.append(df)
        hashes.append(meta.get("model_hash", ""))
        settings.append(meta.get("features.settings", "{}"))
    if missing:
        warnings.warn(f"cohort: {len(missing)} finished slides have no {FEATURES_FILE} "
                      f"(translated with --no-features?): {missing[:5]}", UserWarning, stacklevel=2)
    if not frames:
        raise InputDataError(f"{root}: no finished slide with {FEATURES_FILE} to merge")
    cohort = pd.concat(frames, ignore_index=True, sort=False)
    uniq = sorted(set(hashes))
    if len(uniq) > 1:
        warnings.warn(f"cohort: merging slides from {len(uniq)} different models", UserWarning,
                      stacklevel=2)
    log.info("cohort: merged features of %d slides into %s", len(cohort), target)
    try:
        return write_features(cohort.to_dict("records"), target, model_hash=";".join(uniq),
                              settings=json.loads(settings[0]) if len(set(settings)) == 1 else {})
    except OSError as exc:  # read-only folder, full disk, missing parent: the write is atomic
        raise InputDataError(f"{target}: cannot write the cohort table: "
                             f"{exc.strerror or exc}") from exc
