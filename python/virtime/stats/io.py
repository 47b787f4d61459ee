"""Atomic writing of result tables (CSV or Parquet by suffix) for the CLI and notebooks."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from virtime.errors import InvalidArgumentError

__all__ = ["features_model_hash", "write_table"]


def write_table(df: pd.DataFrame, path: str | Path, *, model_hash: str | None = None) -> Path:
    """Writes ``df`` to ``path`` (.parquet, .csv or .tsv) via a temporary file and a rename.

    Parquet goes through :func:`virtime.io.write_parquet`, so it carries the virtime version and
    ``model_hash`` (the translator behind the features analysed; "none" when not given).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".pq", ".csv", ".tsv"):
        raise InvalidArgumentError(f"{path}: table must end in .parquet, .csv or .tsv")
    from virtime.io import atomic_path

    if suffix in (".parquet", ".pq"):
        from virtime.io import NO_MODEL, write_parquet

        return write_parquet(df, path, model_hash=model_hash or NO_MODEL)
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, sep="\t" if suffix == ".tsv" else ",")
    return path


def features_model_hash(features_path: str | Path) -> str | None:
    """The model hash a features table records (None for CSV or a table without one)."""
    if Path(features_path).suffix.lower() not in (".parquet", ".pq"):
        return None
    from virtime.io import read_parquet_metadata

    try:
        return read_parquet_metadata(features_path).get("model_hash")
    except (OSError, ValueError):
        return None
