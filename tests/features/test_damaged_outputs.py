"""`virtime features` refuses unfinished or damaged outputs, naming the file (#15.6, #15.11)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from virtime.cli import main

SHAPE = (64, 80)
CHUNK = 32


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A finished slide as translate leaves it: canvas (with background: one chunk all zero),
    tissue mask, manifest and a summary that says done. Made once; each test damages a copy."""
    from virtime.stitch.canvas import StreamingCanvas

    rng = np.random.default_rng(20251201)
    coarse = rng.random((23, SHAPE[0] // 8, SHAPE[1] // 8))
    prob = np.repeat(np.repeat(coarse, 8, axis=1), 8, axis=2).astype(np.float32)
    prob[:, CHUNK:, 64:] = 0.0  # a whole chunk of background
    d = tmp_path_factory.mktemp("damaged") / "S1"
    d.mkdir()
    with StreamingCanvas(d / "mif.ome.zarr", SHAPE, factor=1, mpp=0.5, chunk=CHUNK,
                         extra_metadata={"model_hash": "h"}) as canvas:
        canvas.add(prob, 0, 0)
    tissue = np.ones(SHAPE, bool)
    tissue[:, 70:] = False
    np.save(d / "tissue_mask.npy", tissue)
    (d / "summary.json").write_text(json.dumps({"status": "done", "tiles_failed": 0,
                                                "failed_tiles": []}))
    return d


@pytest.fixture
def slide_dir(pristine, tmp_path):
    return Path(shutil.copytree(pristine, tmp_path / "S1"))


def _run(d, capsys):
    rc = main(["features", "-q", str(d)])
    return rc, capsys.readouterr().err.strip().splitlines()


def test_intact_outputs_with_background_pass(slide_dir, capsys):
    empty = slide_dir / "mif.ome.zarr" / "0" / "0" / "1" / "2"
    assert empty.is_file()  # background chunks are stored, so a missing one means damage
    rc, err = _run(slide_dir, capsys)
    assert rc == 0 and err == []
    df = pd.read_parquet(slide_dir / "features.parquet")
    assert df["tissue.pixels"][0] == 64 * 70 and df["tiles_failed"][0] == 0


def _delete(path):
    path.unlink()


def _truncate(path):
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


def _scramble(path):
    raw = path.read_bytes()  # header intact, compressed body garbage
    path.write_bytes(raw[:16] + bytes((b + 97) % 256 for b in raw[16:]))


def _unfinish_manifest(path):
    m = json.loads(path.read_text())
    m["finished"] = False
    path.write_text(json.dumps(m))


def _summary_running(path):
    path.write_text(json.dumps({"status": "running"}))


@pytest.mark.parametrize(("target", "damage", "problem"), [
    ("mif.ome.zarr/0/5/1/2", _delete, "missing"),
    ("mif.ome.zarr/0/0/1/2", _delete, "missing"),  # the background chunk
    ("mif.ome.zarr/0/7/0/1", _truncate, "truncated"),
    ("mif.ome.zarr/0/0/1/2", _scramble, "cannot be decoded"),  # a compressed chunk
    ("mif.ome.zarr/1/3/0/0", _delete, "missing"),
    ("tissue_mask.npy", _delete, "missing"),
    ("mif.ome.zarr.manifest.json", _unfinish_manifest, "unfinished"),
    ("summary.json", _summary_running, "not done"),
    ("summary.json", _delete, "did not finish"),
])
def test_damaged_outputs_are_one_line_errors(slide_dir, capsys, target, damage, problem):
    path = slide_dir / target
    assert path.is_file()
    damage(path)
    rc, err = _run(slide_dir, capsys)
    assert rc == 2
    assert len(err) == 1 and err[0].startswith(f"virtime features: error: {path}: "), err
    assert problem in err[0]
    assert not (slide_dir / "features.parquet").exists()


def test_failures_without_their_mask_are_refused(slide_dir, capsys):
    (slide_dir / "summary.json").write_text(json.dumps({
        "status": "done", "tiles_failed": 1,
        "failed_tiles": [{"tile": 3, "x": 0, "y": 0, "reason": "read_region failed"}]}))
    rc, err = _run(slide_dir, capsys)
    assert rc == 2 and len(err) == 1 and "failed_mask.npy: missing" in err[0]
    lost = np.zeros(SHAPE, bool)
    lost[:16, :16] = True  # recorded tissue lost under the failed tile: counted, left out
    np.save(slide_dir / "failed_mask.npy", lost)
    rc, err = _run(slide_dir, capsys)  # the CLI shows the warning as one line
    assert rc == 0 and len(err) == 1 and err[0].startswith("virtime features: warning: ")
    assert "failed tile" in err[0]
    row = pd.read_parquet(slide_dir / "features.parquet").iloc[0]
    assert row["tiles_failed"] == 1 and row["tissue.pixels"] == 64 * 70 - 256
    assert row["tissue_mm2_failed"] == pytest.approx(256 * 0.25 / 1e6)
    assert row["failed_tissue_share"] == pytest.approx(256 / (64 * 70))  # 5.7 % > 5 %
    assert row["qc_failed_share_exceeded"]
