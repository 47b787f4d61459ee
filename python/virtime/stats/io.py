"""Atomic writing of result tables (CSV or Parquet by suffix) for the CLI and notebooks."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from virtime.errors import InvalidArgumentError

__all__ = ["write_table"]


def write_table(df: pd.DataFrame, path: str | Path) -> Path:
    """Writes ``df`` to ``path`` (.parquet, .csv or .tsv) via a temporary file and a rename."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".pq", ".csv", ".tsv"):
        raise InvalidArgumentError(f"{path}: table must end in .parquet, .csv or .tsv")
    from virtime.stitch.atomic import atomic_path

    with atomic_path(path) as tmp:
        if suffix in (".parquet", ".pq"):
            out = df.copy()
            for c in out.columns:  # categoricals → plain strings: portable Parquet
                if isinstance(out[c].dtype, pd.CategoricalDtype):
                    out[c] = out[c].astype(str)
            out.to_parquet(tmp, index=False)
        else:
            df.to_csv(tmp, index=False, sep="\t" if suffix == ".tsv" else ",")
    return path
