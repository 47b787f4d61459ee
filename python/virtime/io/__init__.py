"""virtime's one I/O layer: atomic writers, the Parquet writer that stamps provenance, the run
manifest that makes interrupted work resumable, and the readers of a slide folder
(:class:`SlideFolder`, :func:`load_slide_outputs`, :func:`read_features`, the OME-Zarr reader).

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
from virtime.io.parquet import (
    NO_MODEL,
    ParquetStream,
    read_features,
    read_parquet_metadata,
    write_parquet,
)
from virtime.io.slide_folder import SlideFolder, SlideOutputs, load_slide_outputs

__all__ = [
    "NO_MODEL",
    "ParquetStream",
    "RunManifest",
    "SlideFolder",
    "SlideOutputs",
    "atomic_files",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_json",
    "load_slide_outputs",
    "read_features",
    "read_parquet_metadata",
    "write_parquet",
]
