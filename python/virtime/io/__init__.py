"""virtime's one I/O layer: atomic writers, the Parquet writer that stamps provenance, the run
manifest that makes interrupted work resumable.

Everything virtime writes goes through here, so "a reader never sees half a file" and "every
table carries the virtime version and the model hash" hold by construction.
"""

from __future__ import annotations

from virtime.io.atomic import (
    RunManifest,
    atomic_files,
    atomic_path,
    atomic_write_bytes,
    atomic_write_json,
)
from virtime.io.parquet import NO_MODEL, ParquetStream, read_parquet_metadata, write_parquet
from virtime.io.slide_folder import SlideFolder

__all__ = [
    "NO_MODEL",
    "ParquetStream",
    "RunManifest",
    "SlideFolder",
    "atomic_files",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_json",
    "read_parquet_metadata",
    "write_parquet",
]
