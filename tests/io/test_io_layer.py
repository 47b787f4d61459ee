"""virtime.io: the one Parquet writer stamps provenance, SlideFolder knows a slide's files, and
every Parquet file the package writes carries the virtime version and the model hash."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import virtime
from virtime.errors import InputDataError
from virtime.io import NO_MODEL, SlideFolder, read_parquet_metadata, write_parquet


def _raw_meta(path: Path) -> dict[bytes, bytes]:
    return dict(pq.read_schema(path).metadata or {})


def test_write_parquet_stamps_version_hash_and_extra(tmp_path: Path) -> None:
    frame = pd.DataFrame({"a": [1, 2], "g": pd.Categorical(["x", "y"])})
    path = write_parquet(frame, tmp_path / "t.parquet", model_hash="abc123",
                         metadata={"settings": json.dumps({"bin_um": 64})})
    raw = _raw_meta(path)
    assert raw[b"virtime.version"] == virtime.__version__.encode()
    assert raw[b"virtime.model_hash"] == b"abc123"
    assert json.loads(raw[b"virtime.settings"]) == {"bin_um": 64}
    assert read_parquet_metadata(path)["model_hash"] == "abc123"
    back = pd.read_parquet(path)
    assert back["g"].tolist() == ["x", "y"] and back["a"].tolist() == [1, 2]
    assert not list(tmp_path.glob(".*partial"))  # nothing left behind


def test_write_parquet_failure_leaves_the_old_file(tmp_path: Path) -> None:
    path = write_parquet(pd.DataFrame({"a": [1]}), tmp_path / "t.parquet", model_hash=NO_MODEL)
    before = path.read_bytes()
    with pytest.raises(TypeError):
        write_parquet({"a": [2]}, path, model_hash=NO_MODEL)  # not a table
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.parquet"]


def test_slide_folder_refuses_unfinished_and_reads_finished(tmp_path: Path) -> None:
    folder = SlideFolder.of(tmp_path, "S1")
    with pytest.raises(InputDataError, match="no such output folder"):
        folder.require_done()
    folder.path.mkdir()
    (folder.summary_file).write_text(json.dumps({"status": "running"}))
    assert not folder.is_done()
    with pytest.raises(InputDataError, match="not done"):
        folder.require_done()
    (folder.summary_file).write_text(json.dumps({"status": "done", "slide": "/x/S1.svs"}))
    assert folder.is_done() and folder.slide_path == Path("/x/S1.svs")
    assert folder.zarr == tmp_path / "S1" / "mif.ome.zarr"


def test_every_parquet_the_pipeline_writes_carries_provenance(
        tmp_path: Path, small_slide: Path, tiny_model, fast_config) -> None:
    """translate + features --merge + tiles + a statistics table: every .parquet is stamped."""
    from virtime.cli import main
    from virtime.stats.io import write_table

    out = tmp_path / "out"
    result = virtime.translate(small_slide, tiny_model, out, fast_config)
    folder = SlideFolder(result.output_dir)
    assert folder.is_done()
    assert np.load(folder.tissue_mask).ndim == 2
    assert main(["features", "--merge", str(out), "-o", str(tmp_path / "merged.parquet")]) == 0
    assert main(["tiles", str(small_slide), "-o", str(tmp_path / "tiles"), "-q"]) == 0
    write_table(pd.DataFrame({"feature": ["CD8.density"], "p": [0.5]}), tmp_path / "assoc.parquet")
    files = sorted(tmp_path.rglob("*.parquet"))
    assert len(files) >= 4
    for path in files:
        raw = _raw_meta(path)
        assert raw.get(b"virtime.version") == virtime.__version__.encode(), path
        assert b"virtime.model_hash" in raw, path
    expected = str(tiny_model.card.sha256).encode()
    for path in (folder.tiles, folder.features_file, tmp_path / "merged.parquet"):
        assert _raw_meta(path)[b"virtime.model_hash"] == expected, path


def test_parquet_stream_is_atomic_and_stamped(tmp_path: Path) -> None:
    from virtime.io import ParquetStream

    path = tmp_path / "s.parquet"
    with ParquetStream(path, model_hash="h1", metadata={"k": "v"}) as stream:
        stream.write(pd.DataFrame({"a": [1, 2]}))
        assert not path.exists()  # a temporary name until close
        stream.write(pd.DataFrame({"a": [3]}))
        stream.add_footer_metadata({"end": 7})
    assert pd.read_parquet(path)["a"].tolist() == [1, 2, 3]
    assert read_parquet_metadata(path)["model_hash"] == "h1"
    assert read_parquet_metadata(path)["k"] == "v"
    assert pq.read_metadata(path).metadata[b"virtime.end"] == b"7"
    before = path.read_bytes()
    with pytest.raises(ValueError, match="boom"), ParquetStream(path, model_hash="h2") as stream:
        stream.write(pd.DataFrame({"a": [9]}))
        raise ValueError("boom")
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.parquet"]
    # The footer write failing (a full disk) leaves no temporary file either.
    stream = ParquetStream(path, model_hash="h3")
    stream.write(pd.DataFrame({"a": [5]}))

    def full_disk() -> None:
        raise OSError(28, "No space left on device")

    real_close, stream._writer.close = stream._writer.close, full_disk
    with pytest.raises(OSError, match="No space"):
        stream.close()
    real_close()  # the real writer's handle, so the test leaves nothing open
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.parquet"]


def test_the_pipeline_writes_the_names_slide_folder_reads() -> None:
    """Writers and readers take the slide folder's file names from one place."""
    from virtime.features import table

    assert SlideFolder.ZARR == "mif.ome.zarr"
    assert SlideFolder.SUMMARY == "summary.json"
    assert SlideFolder.TILES == "tiles.parquet"
    assert SlideFolder.FAILED_MASK == table.FAILED_FILE
    assert table.FEATURES_FILE == SlideFolder.FEATURES and table.TISSUE_FILE == SlideFolder.TISSUE_MASK
