"""A rerun looks before it says "already done": a finished folder that lost a chunk of its map (or
a table) since is translated again, with a line saying what was damaged, and comes out whole."""

from __future__ import annotations

import logging
import shutil

import pytest
from slide_outputs import assert_same_outputs

import virtime
from virtime.cohort.runner import slide_is_complete
from virtime.io.omezarr import read_ome_zarr
from virtime.translation import is_translated

pytestmark = pytest.mark.slow


def _chunk_files(zarr_dir):
    return sorted(p for p in (zarr_dir / "0").rglob("*") if p.is_file() and
                  not p.name.startswith("."))


@pytest.mark.parametrize("damage", ["deleted chunk", "emptied chunk", "deleted table"])
def test_a_damaged_finished_folder_is_repaired_not_skipped(damage, small_slide, tiny_model,
                                                           fast_config, tmp_path, caplog):
    """Old code: the folder was "already done" and the hole stayed (features then refused it,
    the viewer showed zeros)."""
    first = virtime.translate(small_slide, tiny_model, tmp_path / "out", fast_config)
    out = first.output_dir
    reference = tmp_path / "reference"
    shutil.copytree(out, reference)
    chunks = _chunk_files(out / "mif.ome.zarr")
    target = chunks[len(chunks) // 2]
    if damage == "deleted chunk":
        target.unlink()
    elif damage == "emptied chunk":
        target.write_bytes(b"")
    else:
        target = out / "tiles.parquet"
        target.unlink()
    assert not is_translated(out, small_slide)  # what the cohort runner's skip asks
    assert not slide_is_complete(out, features=True, slide_path=small_slide)
    with caplog.at_level(logging.WARNING):
        again = virtime.translate(small_slide, tiny_model, tmp_path / "out", fast_config)
    assert not again.skipped
    said = [r.getMessage() for r in caplog.records if "damaged" in r.getMessage()]
    assert len(said) == 1 and str(target) in said[0]
    read_ome_zarr(out / "mif.ome.zarr", verify=True)  # every chunk there and whole again
    assert_same_outputs(out, reference)
    assert is_translated(out, small_slide)
    assert virtime.translate(small_slide, tiny_model, tmp_path / "out", fast_config).skipped
