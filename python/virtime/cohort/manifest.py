"""The cohort manifest: one row per slide (path, slide_id, patient_id, optional mpp), validated once.

A manifest is a CSV or Parquet table. ``path`` (alias ``slide_path``) is required; relative paths
are taken relative to the manifest's folder so a manifest can travel with its slides. ``slide_id``
defaults to :func:`virtime.slide_ids.slide_id_from_path` (the rule ``virtime translate`` names
folders by: the file name minus its slide extension) and must be unique (case-insensitively) and
usable as a folder name, because each slide writes ``OUT/<slide_id>/``. ``patient_id`` is required (the
statistics aggregate per patient). ``mpp`` overrides a slide's level-0 microns per pixel where the
file lacks it; empty means "from the file".

A missing or broken slide file is *not* a manifest error: it is recorded as failed in the run's
ledger and the other slides go on.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from virtime.errors import InputDataError, InvalidMppError, SlideIdError
from virtime.slide_ids import check_unique_ids, slide_id_from_path, validate_slide_id

__all__ = ["MANIFEST_COLUMNS", "read_manifest", "validate_manifest"]

#: Columns of a validated manifest, in order.
MANIFEST_COLUMNS = ("slide_id", "patient_id", "path", "mpp", "size_bytes")


def read_manifest(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Reads and validates a manifest file (``.csv``, ``.tsv`` or ``.parquet``).

    Returns the table of :func:`validate_manifest`, with relative slide paths resolved against the
    manifest's folder.
    """
    path = Path(path)
    if not path.is_file():
        raise InputDataError(f"{path}: manifest not found")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        elif suffix in (".csv", ".tsv", ".txt"):
            frame = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", dtype=str,
                                keep_default_na=False)
        else:
            raise InputDataError(f"{path}: manifest must be .csv, .tsv or .parquet")
    except InputDataError:
        raise
    except Exception as exc:
        raise InputDataError(f"{path}: cannot read manifest ({exc})") from exc
    return validate_manifest(frame, base_dir=path.parent, name=str(path))


def validate_manifest(
    frame: pd.DataFrame, *, base_dir: str | os.PathLike[str] | None = None, name: str = "manifest"
) -> pd.DataFrame:
    """Checks a manifest table and returns it normalised to :data:`MANIFEST_COLUMNS`.

    ``size_bytes`` is the slide file's size (0 when missing): the runner schedules the largest
    slides first so the run does not end waiting on one big slide.
    """
    df = frame.copy()
    if "path" not in df.columns and "slide_path" in df.columns:
        df = df.rename(columns={"slide_path": "path"})
    missing = [c for c in ("path", "patient_id") if c not in df.columns]
    if missing:
        raise InputDataError(f"{name}: missing column(s) {missing}; need path, slide_id, "
                             f"patient_id and optionally mpp")
    if len(df) == 0:
        raise InputDataError(f"{name}: no slides")
    paths = df["path"].astype(str).str.strip()
    if (paths == "").any() or df["path"].isna().any():
        raise InputDataError(f"{name}: {int(((paths == '') | df['path'].isna()).sum())} rows "
                             f"without a path")
    base = Path(base_dir) if base_dir is not None else None
    paths = paths.map(lambda p: str(base / p) if base is not None and not os.path.isabs(p) else p)
    try:
        if "slide_id" in df.columns:
            ids = df["slide_id"].astype(str).str.strip()
            blank = (ids == "") | df["slide_id"].isna()
            ids[~blank] = [validate_slide_id(i) for i in ids[~blank]]
            ids[blank] = paths[blank].map(slide_id_from_path)
        else:
            ids = paths.map(slide_id_from_path)
    except SlideIdError as exc:
        raise InputDataError(f"{name}: slide_id must be a plain folder name: {exc}") from None
    try:
        check_unique_ids(paths.tolist(), ids.tolist())
    except SlideIdError as exc:
        raise InputDataError(f"{name}: slide_id repeated: {exc}") from None
    patients = df["patient_id"]
    if patients.isna().any() or (patients.astype(str).str.strip() == "").any():
        raise InputDataError(f"{name}: {int((patients.isna() | (patients.astype(str).str.strip() == '')).sum())} "
                             f"rows without patient_id")
    mpp = _mpp_column(df, name)
    return pd.DataFrame({
        "slide_id": ids.to_numpy(dtype=object),
        "patient_id": patients.astype(str).str.strip().to_numpy(dtype=object),
        "path": paths.to_numpy(dtype=object),
        "mpp": mpp,
        "size_bytes": np.array([_size(p) for p in paths], dtype=np.int64),
    })


def _mpp_column(df: pd.DataFrame, name: str) -> np.ndarray:
    if "mpp" not in df.columns:
        return np.full(len(df), np.nan)
    raw = df["mpp"].map(lambda v: np.nan if v is None or (isinstance(v, str) and not v.strip())
                        else v)
    mpp = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float)
    unparsable = np.isnan(mpp) & raw.notna().to_numpy()
    if unparsable.any():
        raise InputDataError(f"{name}: mpp is not a number in {int(unparsable.sum())} rows "
                             f"(e.g. {raw[unparsable].iloc[0]!r})")
    from virtime.mpp import check_mpp

    for row in np.flatnonzero(~np.isnan(mpp)):  # an explicit mpp, as --mpp: any positive number
        try:
            check_mpp(mpp[row], path=name, source=f"in row {row + 1}", mpp_range=None,
                      advice="give each slide's level-0 microns per pixel, or leave it empty")
        except InvalidMppError as exc:
            raise InputDataError(str(exc)) from None
    return mpp


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0
