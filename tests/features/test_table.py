"""Recompute from stored outputs, Parquet metadata, cohort merge and the CLI."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest

from virtime import __version__
from virtime.channels import CHANNEL_NAMES, CHANNELS
from virtime.cli import main
from virtime.errors import InputDataError
from virtime.features import (
    SlideFeatureAccumulator,
    compute_slide_features,
    features_from_outputs,
    load_slide_outputs,
    merge_features,
    read_features,
    write_features,
)

MPP = 0.5


def _whole(prob, tissue, **kw):
    acc = SlideFeatureAccumulator(MPP, **kw)
    acc.add_tile(prob, tissue, 0, 0)
    return acc.result()


def _write_slide(root, slide_id, prob, tissue=None, model_hash="abc123"):
    """A translated slide in the documented layout (NGFF 0.4 attributes, zarr v2)."""
    import zarr

    d = root / slide_id
    d.mkdir(parents=True)
    group = zarr.open_group(str(d / "mif.ome.zarr"), mode="w", zarr_format=2)
    group.create_array("0", shape=prob.shape, chunks=(1, 32, 32), dtype="uint8")[:] = prob
    half = prob[:, ::2, ::2]
    group.create_array("1", shape=half.shape, chunks=(1, 32, 32), dtype="uint8")[:] = half
    axes = [{"name": "c", "type": "channel"}, {"name": "y", "type": "space", "unit": "micrometer"},
            {"name": "x", "type": "space", "unit": "micrometer"}]
    group.attrs.update({
        "multiscales": [{"version": "0.4", "axes": axes, "datasets": [
            {"path": str(k), "coordinateTransformations": [
                {"type": "scale", "scale": [1.0, MPP * 2 ** k, MPP * 2 ** k]}]} for k in (0, 1)]}],
        "omero": {"channels": [{"label": c.name, "color": c.color[1:]} for c in CHANNELS]},
        "virtime": {"model_hash": model_hash},
    })
    if tissue is not None:
        np.save(d / "tissue_mask.npy", tissue)
    return d


def _finish(folder, model_hash="abc123"):
    """What a finished translation writes last: summary.json saying done, with its model."""
    (folder / "summary.json").write_text(json.dumps({"status": "done", "model_hash": model_hash}))
    return folder


@pytest.fixture
def slide(blobs, rng):
    prob = blobs(23, 100, 84)
    tissue = rng.random((100, 84)) > 0.25
    return prob, tissue


def test_strips_equal_whole_canvas(slide):
    prob, tissue = slide
    got = compute_slide_features(prob, tissue, MPP, strip_rows=20)  # 20 rows -> 2 bins of 128 px
    assert got == _whole(prob, tissue)
    got = compute_slide_features(prob, tissue, MPP, bin_um=4.0, strip_rows=9)
    assert got == _whole(prob, tissue, bin_um=4.0)
    # a tiny byte budget forces column blocks too: still exact
    got = compute_slide_features(prob, tissue, MPP, bin_um=4.0, strip_rows=9,
                                 max_block_bytes=23 * 16 * 24)
    assert got == _whole(prob, tissue, bin_um=4.0)


def test_coarse_and_derived_tissue(slide):
    prob, _ = slide
    coarse = np.zeros((25, 21), bool)
    coarse[5:20, 3:15] = True
    full = np.repeat(np.repeat(coarse, 4, axis=0), 4, axis=1)
    assert compute_slide_features(prob, coarse, MPP, strip_rows=16) == _whole(prob, full)
    assert compute_slide_features(prob, coarse, MPP, bin_um=8.0, strip_rows=16,
                                  max_block_bytes=23 * 16 * 32) == _whole(prob, full, bin_um=8.0)
    dapi = prob[CHANNEL_NAMES.index("DAPI")] > 0
    assert compute_slide_features(prob, None, MPP) == _whole(prob, dapi)
    with pytest.raises(InputDataError):
        compute_slide_features(prob[:5], None, MPP)


def test_recompute_from_outputs_and_metadata(tmp_path, slide):
    prob, tissue = slide
    d = _write_slide(tmp_path, "S1", prob, tissue)
    out = load_slide_outputs(d)
    assert out.mpp == MPP and out.channels == CHANNEL_NAMES and out.model_hash == "abc123"
    assert out.overview(60).shape == (23, 50, 42)
    row = features_from_outputs(d)
    df, meta = read_features(d / "features.parquet")
    assert meta["version"] == __version__ and meta["model_hash"] == "abc123"
    assert df.shape[0] == 1 and df["slide_id"][0] == "S1"
    want = _whole(prob, tissue)
    for key in ("CD8.density", "CD8.entropy", "CK.sharpness", "CD3|CD8.or_density"):
        assert df[key][0] == want[key] == row[key]
    assert len([c for c in df.columns if c.endswith(".and_density")]) == 210


def test_missing_store_is_an_error(tmp_path):
    with pytest.raises(InputDataError, match="mif.ome.zarr"):
        load_slide_outputs(tmp_path)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_merge_features(tmp_path, blobs, rng):
    for i in range(3):
        d = _write_slide(tmp_path, f"S{i}", blobs(23, 40, 48), rng.random((40, 48)) > 0.3)
        features_from_outputs(_finish(d))
    out = merge_features(tmp_path, tmp_path / "cohort.parquet")
    df, meta = read_features(out)
    assert sorted(df["slide_id"]) == ["S0", "S1", "S2"] and meta["model_hash"] == "abc123"
    one, _ = read_features(tmp_path / "S1" / "features.parquet")
    row = df[df["slide_id"] == "S1"].iloc[0]
    assert math.isclose(row["CD8.snr"], one["CD8.snr"][0])
    with pytest.raises(InputDataError, match="no "):
        merge_features(tmp_path / "S0", tmp_path / "x.parquet")
    two, _ = read_features(merge_features(tmp_path, tmp_path / "two.parquet",
                                          slide_ids=["S2", "S0"]))
    assert two["slide_id"].tolist() == ["S2", "S0"]


def _features_folder(root, sid, model, rows_id=None):
    """A finished slide folder holding only a features row made by ``model``."""
    write_features([{"slide_id": rows_id or sid, "CD8.density": 0.1}],
                   root / sid / "features.parquet", model_hash=model)
    return _finish(root / sid, model)


def test_merge_features_refuses_repeats_and_mixed_models(tmp_path):
    for sid, model in (("A", "m1"), ("B", "m2"), ("D", "m2")):
        _features_folder(tmp_path, sid, model)
    with pytest.raises(InputDataError, match=r"2 different models \(m2: 2 \(B, D\); m1: 1 \(A\)\)"):
        merge_features(tmp_path)
    assert not (tmp_path / "cohort_features.parquet").exists()
    merged = merge_features(tmp_path, slide_ids=["B", "D"])  # one model's slides apart
    assert merged == tmp_path / "cohort_features.parquet"
    assert read_features(merged)[1]["model_hash"] == "m2"
    _features_folder(tmp_path, "C", "m2", rows_id="B")
    with pytest.raises(InputDataError, match="slide_id repeated"):
        merge_features(tmp_path, tmp_path / "x.parquet", slide_ids=["B", "C"])
    assert not (tmp_path / "x.parquet").exists()


def test_merge_leaves_out_unfinished_and_stale_folders_and_names_them(tmp_path, caplog, capsys):
    """Two slides translated by model m1; S1 rerun with --force and other weights, killed: its
    summary.json is gone (the rerun removes it first) and its features.parquet is m1's. S2's
    summary says done by m2 but its features are m1's. Only S0 may be merged."""
    for sid in ("S0", "S1", "S2"):
        _features_folder(tmp_path / "OUT", sid, "m1")
    (tmp_path / "OUT" / "S1" / "summary.json").unlink()
    _finish(tmp_path / "OUT" / "S2", "m2")
    _features_folder(tmp_path / "OUT", "S3", "m1")
    (tmp_path / "OUT" / "S3" / "summary.json").write_text('{"status": "running"}')
    with caplog.at_level(logging.WARNING, logger="virtime.features.merge"):
        merged = merge_features(tmp_path / "OUT")
    df, meta = read_features(merged)
    assert df["slide_id"].tolist() == ["S0"] and meta["model_hash"] == "m1"
    left_out = json.loads(meta["merge.left_out"])
    assert sorted(left_out) == ["S1", "S2", "S3"]
    assert "summary.json" in left_out["S1"] and "m2" in left_out["S2"]
    assert "'running'" in left_out["S3"]
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(lines) == 1 and all(f"{s} (" in lines[0] for s in ("S1", "S2", "S3"))
    # the CLI: exit 0 with the finished slide only, one warning line naming the others
    assert main(["features", "--merge", str(tmp_path / "OUT"), "-o",
                 str(tmp_path / "cli.parquet")]) == 0
    assert read_features(tmp_path / "cli.parquet")[0]["slide_id"].tolist() == ["S0"]
    (tmp_path / "OUT" / "S0" / "summary.json").unlink()  # nothing finished left: one error line
    assert main(["features", "--merge", str(tmp_path / "OUT"), "-o",
                 str(tmp_path / "none.parquet")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("virtime features: error: ") and "4 left out" in err
    assert not (tmp_path / "none.parquet").exists()


def test_cli_recompute_and_merge(tmp_path, slide, capsys):
    prob, tissue = slide
    d = _finish(_write_slide(tmp_path / "OUT", "S9", prob, tissue))
    assert main(["features", "-q", "--plots", str(d)]) == 0
    assert (d / "features.parquet").is_file() and (d / "activation_panel.png").stat().st_size
    cohort = tmp_path / "cohort.parquet"
    assert main(["features", "--merge", str(tmp_path / "OUT"), "-o", str(cohort)]) == 0
    df, _ = read_features(cohort)
    assert df["CD8.density"][0] == _whole(prob, tissue)["CD8.density"]
    assert main(["features", str(tmp_path / "nope")]) == 2
    assert "mif.ome.zarr" in capsys.readouterr().err


def test_reads_what_the_stitcher_writes(tmp_path, blobs, rng):
    """Integration with virtime.stitch: its OME-Zarr canvas is read with the right mpp/names."""
    canvas = pytest.importorskip("virtime.stitch.canvas")
    prob = blobs(23, 64, 80, np.float32)
    d = tmp_path / "S7"
    d.mkdir()
    with canvas.StreamingCanvas(d / "mif.ome.zarr", (64, 80), factor=1, mpp=0.5, chunk=32,
                                extra_metadata={"model_hash": "h7"}) as c:
        c.add(prob, 0, 0)
    tissue = rng.random((64, 80)) > 0.3
    np.save(d / "tissue_mask.npy", tissue)
    with pytest.raises(InputDataError, match="summary.json: missing"):  # a run that never ended
        load_slide_outputs(d)
    (d / "summary.json").write_text('{"status": "done", "tiles_failed": 0, "failed_tiles": []}')
    out = load_slide_outputs(d)
    assert (out.mpp, out.channels, out.model_hash) == (0.5, CHANNEL_NAMES, "h7")
    stored = np.asarray(out.prob[:])
    assert stored.dtype == np.uint8 and stored.shape == (23, 64, 80)
    assert features_from_outputs(d, write=False)["CD8.snr"] == _whole(stored, tissue)["CD8.snr"]
