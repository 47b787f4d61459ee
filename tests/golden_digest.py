"""Content digests of a slide output folder, for the golden-output test.

A digest is a SHA-256 per stored part (each pyramid level's pixels, each table's columns and
metadata, the tissue mask, the thumbnail's pixels, the slide page, the run record), with the
parts that legitimately change from run to run left out: wall-clock timings, absolute paths and
file modification times. Two runs of the same code on the same machine give equal digests;
``tests/translation/test_golden_outputs.py`` compares today's code with digests recorded from
the code before a refactor.

Importable from any test because tests/conftest.py puts this folder on ``sys.path``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

#: Run-record keys that hold timings, paths or times, not results.
VOLATILE_SUMMARY_KEYS = ("seconds", "slide", "timeline", "timings_seconds")
VOLATILE_SOURCE_KEYS = ("path", "mtime_ns")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _json_sha(value: Any) -> str:
    return _sha(json.dumps(value, sort_keys=True).encode())


def _array_sha(array: np.ndarray) -> str:
    head = f"{array.dtype.str}{array.shape}".encode()
    return _sha(head + np.ascontiguousarray(array).tobytes())


def _table_digest(path: Path) -> dict[str, str]:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    parts = {"columns": _json_sha([f"{f.name}:{f.type}" for f in table.schema])}
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    parts["metadata"] = _json_sha(meta)
    for name in table.column_names:
        values = table.column(name).to_numpy(zero_copy_only=False)
        if values.dtype == object:
            parts[f"col:{name}"] = _json_sha([None if v is None else str(v) for v in values])
        else:
            parts[f"col:{name}"] = _array_sha(values)
    return parts


def _summary_digest(path: Path) -> str:
    record = json.loads(path.read_text())
    for key in VOLATILE_SUMMARY_KEYS:
        record.pop(key, None)
    for key in VOLATILE_SOURCE_KEYS:
        record.get("source", {}).pop(key, None)
    return _json_sha(record)


def _masked_sha(text: str, root: Path) -> str:
    """Digest of ``text`` with the run's root folder (absolute paths) masked."""
    return _sha(text.replace(str(Path(root).resolve()), "<root>").replace(str(root), "<root>").encode())


def output_digest(folder: Path, root: Path) -> dict[str, str]:
    """SHA-256 of every result stored in the slide output folder ``folder``; absolute paths
    under ``root`` (where the test put the slide and the outputs) are masked."""
    import zarr
    from PIL import Image

    folder = Path(folder)
    digest: dict[str, str] = {}
    group = zarr.open_group(str(folder / "mif.ome.zarr"), mode="r")
    digest["mif.attrs"] = _masked_sha(json.dumps(dict(group.attrs), sort_keys=True), root)
    for entry in group.attrs["multiscales"][0]["datasets"]:
        level = group[entry["path"]]
        digest[f"mif.level{entry['path']}"] = _array_sha(np.asarray(level[:]))
        digest[f"mif.level{entry['path']}.attrs"] = _json_sha(dict(level.attrs))
    for table in sorted(folder.glob("*.parquet")):
        for part, sha in _table_digest(table).items():
            digest[f"{table.name}:{part}"] = sha
    for array in sorted(folder.glob("*.npy")):
        digest[array.name] = _array_sha(np.load(array, allow_pickle=False))
    for image in sorted(folder.glob("*.png")):
        digest[image.name] = _array_sha(np.asarray(Image.open(image)))
    digest["summary.json"] = _summary_digest(folder / "summary.json")
    if (folder / "index.html").exists():
        digest["index.html"] = _masked_sha((folder / "index.html").read_text(), root)
    digest["files"] = _json_sha(sorted(p.relative_to(folder).as_posix()
                                       for p in folder.rglob("*") if p.is_file()))
    return digest
