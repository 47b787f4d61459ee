"""The one Parquet writer and its streaming twin: atomic, and every table says which virtime
and which model made it.

Readers (``virtime features``, the statistics commands, a notebook) check provenance from the
schema metadata, so a table without it cannot be told from a foreign file. Writing through
:func:`write_parquet` or :class:`ParquetStream` is what guarantees ``virtime.version`` and ``virtime.model_hash`` on every file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from virtime.errors import InputDataError
from virtime.io.atomic import CommitOnExit

__all__ = ["NO_MODEL", "ParquetStream", "read_features", "read_parquet_metadata", "write_parquet"]

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
    import pyarrow.parquet as pq

    from virtime.io.atomic import atomic_path

    table = _as_table(data, "write_parquet")
    table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                           **_stamp(model_hash, metadata)})
    target = Path(path)
    with atomic_path(target) as tmp:
        pq.write_table(table, str(tmp))
    return target


def _as_table(data: Any, who: str) -> Any:
    """A pyarrow Table from a DataFrame (index dropped, categoricals as strings) or a Table."""
    import pandas as pd
    import pyarrow as pa

    if isinstance(data, pd.DataFrame):
        frame = data
        cats = [c for c in frame.columns if isinstance(frame[c].dtype, pd.CategoricalDtype)]
        if cats:
            frame = frame.copy()
            for column in cats:
                frame[column] = frame[column].astype(str)
        return pa.Table.from_pandas(frame, preserve_index=False)
    if isinstance(data, pa.Table):
        return data
    raise TypeError(f"{who} takes a DataFrame or a pyarrow Table, not {type(data)}")


def _stamp(model_hash: str, metadata: Mapping[str, Any] | None) -> dict[bytes, bytes]:
    """``virtime.version``, ``virtime.model_hash`` and ``virtime.<key>`` for each extra key."""
    from virtime import __version__

    stamp = {b"virtime.version": __version__.encode(),
             b"virtime.model_hash": str(model_hash).encode()}
    for key, value in (metadata or {}).items():
        stamp[f"virtime.{key}".encode()] = str(value).encode()
    return stamp


class ParquetStream(CommitOnExit):
    """One Parquet file written in row groups, atomically, stamped like :func:`write_parquet`.

    For tables too large to hold in memory (``cells.parquet``): every :meth:`write` appends a
    row group to a temporary file in the target's folder; :meth:`close` renames it into place,
    :meth:`abort` (or an exception inside ``with``) drops it and leaves any old file as it was.
    The schema is fixed by the first write; the schema metadata carries ``virtime.version``,
    ``virtime.model_hash`` and ``virtime.<key>`` of ``metadata``; what is known only at the end
    goes into the file footer with :meth:`add_footer_metadata`.

    Parameters
    ----------
    path
        The final file.
    model_hash
        The translator's sha256, or :data:`NO_MODEL`.
    metadata
        More ``key -> value`` strings, stored as ``virtime.<key>``.
    """

    def __init__(self, path: str | os.PathLike[str], *, model_hash: str,
                 metadata: Mapping[str, Any] | None = None) -> None:
        import contextlib

        from virtime.io.atomic import atomic_path

        self.path = Path(path)
        self.rows = 0
        self._stamp = _stamp(model_hash, metadata)
        self._stack = contextlib.ExitStack()
        self._tmp: Path = self._stack.enter_context(atomic_path(self.path))
        self._writer: Any = None
        self.schema: Any = None

    def write(self, data: Any) -> None:
        """Appends a DataFrame or Table as one row group (cast to the first write's schema)."""
        import pyarrow.parquet as pq

        table = _as_table(data, "ParquetStream.write")
        if self._writer is None:
            self.schema = table.schema.remove_metadata().with_metadata(self._stamp)
            self._writer = pq.ParquetWriter(str(self._tmp), self.schema)
        self._writer.write_table(table.cast(self.schema))
        self.rows += table.num_rows

    def add_footer_metadata(self, metadata: Mapping[str, Any]) -> None:
        """Footer key-value metadata ``virtime.<key>`` (after at least one :meth:`write`)."""
        if self._writer is None:
            raise RuntimeError(f"{self.path}: write a row group before the footer metadata")
        self._writer.add_key_value_metadata({f"virtime.{k}": str(v) for k, v in metadata.items()})

    def close(self) -> Path:
        """Finishes the file and renames it into place (at least one write is needed)."""
        if self._writer is None:
            self.abort()
            raise RuntimeError(f"{self.path}: nothing written (the schema is unknown)")
        try:
            self._writer.close()  # the footer: a full disk fails here
        except BaseException:
            self._writer = None
            self.abort()  # no temporary file left behind
            raise
        self._stack.close()
        return self.path

    def abort(self) -> None:
        """Drops the temporary file; an existing file at ``path`` is left as it was."""
        import contextlib

        if self._writer is not None:
            self._writer.close()
        with contextlib.suppress(RuntimeError):
            self._stack.__exit__(RuntimeError, RuntimeError("aborted"), None)

    def __enter__(self) -> ParquetStream:  # noqa: PYI034  (typing.Self needs Python 3.11)
        return self


def _virtime_keys(raw: Mapping[bytes, bytes] | None) -> dict[str, str]:
    return {k.decode()[len("virtime."):]: v.decode() for k, v in (raw or {}).items()
            if k.startswith(b"virtime.")}


def read_parquet_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The ``virtime.*`` metadata of a Parquet file, keys without the prefix (no data read)."""
    import pyarrow.parquet as pq

    return _virtime_keys(pq.read_schema(path).metadata)


def read_features(path: str | os.PathLike[str]) -> tuple[Any, dict[str, str]]:
    """A features table and its virtime metadata (``version``, ``model_hash``, ``settings``).

    Any table virtime wrote reads the same way; a file that is not Parquet raises
    :class:`~virtime.errors.InputDataError` naming it.
    """
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:
        raise InputDataError(f"features: cannot read {path}: {exc}") from exc
    return table.to_pandas(), _virtime_keys(table.schema.metadata)
