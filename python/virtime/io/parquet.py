"""The one Parquet writer: atomic, and every table says which virtime and which model made it.

Readers (``virtime features``, the statistics commands, a notebook) check provenance from the
schema metadata, so a table without it cannot be told from a foreign file. Writing through this
function is what guarantees ``virtime.version`` and ``virtime.model_hash`` on every file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["NO_MODEL", "read_parquet_metadata", "write_parquet"]

#: The model hash recorded on tables that no model produced (H&E tile lists, cohort ledgers).
NO_MODEL = "none"


def write_parquet(
    data: Any,
    path: str | os.PathLike[str],
    *,
    model_hash: str,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Writes a DataFrame or pyarrow Table to ``path`` atomically, stamped with provenance.

    Parameters
    ----------
    data
        A pandas DataFrame (its index is dropped; categoricals become strings, which every
        Parquet reader understands) or a ``pyarrow.Table``.
    path
        Target file; a temporary file in the same folder is renamed over it when complete.
    model_hash
        The translator's sha256, or :data:`NO_MODEL` for tables no model produced. Required,
        so that no caller can forget it.
    metadata
        More ``key -> value`` strings; keys are stored as ``virtime.<key>``.
    """
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from virtime import __version__
    from virtime.io.atomic import atomic_path

    if isinstance(data, pd.DataFrame):
        frame = data.copy()
        for column in frame.columns:
            if isinstance(frame[column].dtype, pd.CategoricalDtype):
                frame[column] = frame[column].astype(str)
        table = pa.Table.from_pandas(frame, preserve_index=False)
    elif isinstance(data, pa.Table):
        table = data
    else:
        raise TypeError(f"write_parquet takes a DataFrame or a pyarrow Table, not {type(data)}")
    stamp = {b"virtime.version": __version__.encode(),
             b"virtime.model_hash": str(model_hash).encode()}
    for key, value in (metadata or {}).items():
        stamp[f"virtime.{key}".encode()] = str(value).encode()
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **stamp})
    target = Path(path)
    with atomic_path(target) as tmp:
        pq.write_table(table, str(tmp))
    return target


def read_parquet_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The ``virtime.*`` metadata of a Parquet file, keys without the prefix (no data read)."""
    import pyarrow.parquet as pq

    raw = pq.read_schema(path).metadata or {}
    return {k.decode()[len("virtime."):]: v.decode() for k, v in raw.items()
            if k.startswith(b"virtime.")}
