"""virtime.io is the floor: it imports nothing above it, even lazily, so no import cycle runs
through it; the readers of a slide folder (load_slide_outputs, read_features) live there once."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pandas as pd

import virtime
import virtime.features
import virtime.io
from virtime.io import SlideFolder, read_features, write_parquet

#: What io may import from virtime: the package root (its version), errors and channel names.
_BELOW_IO = {"virtime", "virtime.errors", "virtime.channels"}


def _virtime_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("virtime")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("virtime"):
            found.add(node.module)
    return found


def test_io_imports_nothing_above_it() -> None:
    folder = Path(virtime.io.__file__).parent
    above = {f"{p.name}: {m}" for p in folder.glob("*.py") for m in _virtime_imports(p)
             if m not in _BELOW_IO and not m.startswith("virtime.io")}
    assert above == set()


def test_one_read_features(tmp_path: Path) -> None:
    assert virtime.features.read_features is read_features
    assert virtime.features.load_slide_outputs is virtime.io.load_slide_outputs
    frame = pd.DataFrame({"slide_id": ["S"], "CD8.density": [np.float64(12.5)]})
    folder = SlideFolder(tmp_path / "S")
    write_parquet(frame, folder.features_file, model_hash="m1",
                  metadata={"features.settings": "{}"})
    table, meta = read_features(folder.features_file)
    pd.testing.assert_frame_equal(table, frame)
    assert meta["model_hash"] == "m1" and meta["version"] == virtime.__version__
    folder.summary_file.write_text('{"status": "done"}')
    pd.testing.assert_frame_equal(folder.features(), frame)


def test_summary_or_none(tmp_path: Path) -> None:
    folder = SlideFolder(tmp_path)
    assert folder.summary_or_none() is None  # missing
    folder.summary_file.write_text("{not json")
    assert folder.summary_or_none() is None
    folder.summary_file.write_text("[1, 2]")
    assert folder.summary_or_none() is None
    folder.summary_file.write_text('{"status": "done", "seconds": 1.5}')
    assert folder.summary_or_none() == {"status": "done", "seconds": 1.5}
