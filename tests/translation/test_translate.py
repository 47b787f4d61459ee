"""Whole-slide translation end to end, checked against a direct model run on the same tiles."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch
import zarr
from direct_run import direct_tile_probs, normalized_tile
from dying_engine import DyingEngine, Interrupt

import virtime
from virtime import errors
from virtime.channels import CHANNEL_NAMES
from virtime.cli import main


@pytest.mark.slow
def test_translate_matches_direct_model_run(small_slide, tiny_model, fast_config, tmp_path):
    result = virtime.translate(small_slide, tiny_model, tmp_path, fast_config)
    out = result.output_dir
    assert result.record["status"] == "done" and result.tiles_failed == 0
    for name in ["mif.ome.zarr", "tiles.parquet", "summary.json", "thumbnail.png",
                 "features.parquet", "tissue_mask.npy"]:
        assert (out / name).exists(), name
    tiles = pd.read_parquet(out / "tiles.parquet")
    assert len(tiles) == result.tiles_done > 0
    level0 = zarr.open_group(str(out / "mif.ome.zarr"), mode="r")["0"]
    assert level0.shape == (23, 512 // 4, 768 // 4)  # 0.5 -> 2.0 um/px is a factor of 4
    canvas = np.asarray(level0[:])
    for _, row in tiles.iloc[[0, len(tiles) // 2, -1]].iterrows():
        # independent path: openslide-python read, numpy normalize, model per window, sigmoid
        probs = direct_tile_probs(small_slide, tiny_model, row["x"], row["y"], size=128, window=64)
        for c in (0, 13, 22):
            name = CHANNEL_NAMES[c]
            assert row[f"{name}.mean_probability"] == pytest.approx(probs[c].mean(), abs=1e-4)
            assert row[f"{name}.positive_fraction"] == pytest.approx((probs[c] > 0.5).mean(),
                                                                     abs=2e-3)
        # Canvas: 4x4 block means of the probabilities, stored as round(255 p).
        blocks = probs.reshape(23, 32, 4, 32, 4).mean(axis=(2, 4))
        oy, ox = int(row["y"]) // 4, int(row["x"]) // 4
        stored = canvas[:, oy : oy + 32, ox : ox + 32].astype(float)
        assert np.abs(stored - np.floor(blocks * 255 + 0.5)).max() <= 1


@pytest.mark.slow
def test_rerun_skips_and_force_redoes(small_slide, tiny_model, fast_config, tmp_path):
    first = virtime.translate(small_slide, tiny_model, tmp_path, fast_config)
    again = virtime.translate(small_slide, tiny_model, tmp_path, fast_config)
    assert again.skipped and again.tiles_done == 0
    forced = virtime.translate(small_slide, tiny_model, tmp_path,
                               dataclasses.replace(fast_config, force=True))
    assert not forced.skipped and forced.tiles_done == first.tiles_done


def _probed(engine):
    """The engine with its memory cost measured, so the budget's probe calls are not counted."""
    from virtime.engines.memory import measure_window_cost

    measure_window_cost(engine, 64)
    return engine


@pytest.fixture(scope="module")
def tall_slide(tmp_path_factory):
    """Tall enough (2,304 rows) for three canvas bands, so a run can stop between them."""
    from virtime.simulate.slides import make_slide

    return make_slide(tmp_path_factory.mktemp("tall") / "tall.svs", 384, 2304, mpp=0.5, seed=12)


@pytest.mark.slow
@pytest.mark.parametrize("calls", [2, 6, 11])
def test_interrupted_run_resumes_to_identical_output(tall_slide, tiny_model, fast_config,
                                                      tmp_path, calls):
    from virtime.engines import create_engine

    reference = virtime.translate(tall_slide, tiny_model, tmp_path / "ref", fast_config)
    engine = _probed(create_engine(tiny_model, backend=fast_config.backend, max_batch=16, window=64))
    with pytest.raises(Interrupt):
        virtime.translate(tall_slide, tiny_model, tmp_path / "cut", fast_config,
                          engine=DyingEngine(engine, calls=calls))
    cut = tmp_path / "cut" / "tall"
    assert not (cut / "summary.json").exists()
    bands = json.loads((cut / "mif.ome.zarr.manifest.json").read_text())["stages"].get("level0_bands", [])
    assert (len(bands) > 0) == (calls > 2)  # later stops leave finished bands to resume from
    resumed = virtime.translate(tall_slide, tiny_model, tmp_path / "cut", fast_config)
    assert not resumed.skipped
    a = zarr.open_group(str(reference.output_dir / "mif.ome.zarr"), mode="r")
    b = zarr.open_group(str(resumed.output_dir / "mif.ome.zarr"), mode="r")
    levels = [d["path"] for d in a.attrs["multiscales"][0]["datasets"]]
    for level in levels:
        np.testing.assert_array_equal(np.asarray(a[level][:]), np.asarray(b[level][:]))
    ta = pd.read_parquet(reference.output_dir / "tiles.parquet")
    tb = pd.read_parquet(resumed.output_dir / "tiles.parquet")
    pd.testing.assert_frame_equal(ta.reset_index(drop=True), tb.reset_index(drop=True))


def test_model_mismatches_are_refused(small_slide, tiny_model, fast_config, tmp_path):
    with pytest.raises(errors.ModelMismatchError, match="0.5 um/px, not the requested 0.25"):
        virtime.translate(small_slide, tiny_model, tmp_path,
                          dataclasses.replace(fast_config, model_mpp=0.25))
    with pytest.raises(errors.InvalidArgumentError, match="integer multiple"):
        virtime.translate(small_slide, tiny_model, tmp_path,
                          dataclasses.replace(fast_config, output_mpp=1.3))


def test_all_background_slide_gives_zero_tiles(tiny_model, fast_config, tmp_path):
    from virtime.simulate.slides import write_slide

    glass = write_slide(tmp_path / "glass.svs", np.full((512, 512, 3), 244, np.uint8), 0.5)
    with pytest.warns(RuntimeWarning, match="no tissue"):  # features are NaN, with a warning
        result = virtime.translate(glass, tiny_model, tmp_path / "out", fast_config)
    assert result.tiles_done == 0 and result.record["status"] == "done"


def test_cli_translates_and_reports_bad_slides(small_slide, tiny_weights, tmp_path, capsys):
    bogus = tmp_path / "bogus.svs"
    bogus.write_text("not a slide")
    log = tmp_path / "events.jsonl"
    rc = main(["translate", str(small_slide), str(bogus), "-o", str(tmp_path / "out"),
               "--weights", str(tiny_weights), "--tile-size", "128", "--backend", "onnxruntime",
               "-q", "--log-json", str(log), "--no-features"])
    assert rc == 2
    captured = capsys.readouterr()
    assert captured.err.count("bogus.svs") == 1
    assert json.loads((tmp_path / "out" / "small" / "summary.json").read_text())["status"] == "done"
    events = [json.loads(line) for line in log.read_text().splitlines()]
    names = [e["event"] for e in events]
    assert names[0] == "start" and "progress" in names
    # The slides' end events in order, then the run's, which counts the one bad slide.
    assert [n for n in names if n not in ("start", "progress")] == ["slide_done", "slide_failed",
                                                                   "run_done"]
    assert events[-1]["slides"] == 2 and events[-1]["failed"] == 1


def test_cli_missing_weights_says_where_to_get_them(small_slide, tmp_path, capsys):
    rc = main(["translate", str(small_slide), "-o", str(tmp_path), "--weights",
               str(tmp_path / "model.pth")])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.pth: weights file not found" in err[0] and "--weights" in err[0]


@pytest.mark.slow
def test_overlap_blend_matches_a_dense_reference(small_slide, tiny_model, fast_config, tmp_path):
    """With overlap, the canvas is Σw·p / Σw over every window, pooled: rebuilt here densely."""
    from virtime.stitch.windows import plan_windows, window_weight

    cfg = dataclasses.replace(fast_config, overlap=16, features=False)
    result = virtime.translate(small_slide, tiny_model, tmp_path, cfg)
    tiles = pd.read_parquet(result.output_dir / "tiles.parquet")
    assert set(tiles["x"]) <= set(range(0, 768, 112))  # stride 128 - 16
    weight = window_weight(64, 16)
    wp = np.zeros((23, 512 + 128, 768 + 128))
    ws = np.zeros((512 + 128, 768 + 128))
    for x, y in tiles[["x", "y"]].to_numpy():
        probs = _direct_tile_probs_windows(small_slide, tiny_model, x, y)
        for (ox, oy), p in zip(plan_windows(128, 64, 16), probs):
            wp[:, y + oy : y + oy + 64, x + ox : x + ox + 64] += weight * p
            ws[y + oy : y + oy + 64, x + ox : x + ox + 64] += weight
    wp, ws = wp[:, :512, :768], ws[:512, :768]
    pooled_wp = wp.reshape(23, 128, 4, 192, 4).sum(axis=(2, 4))
    pooled_ws = ws.reshape(128, 4, 192, 4).sum(axis=(1, 3))
    covered = pooled_ws > 0
    expected = np.floor(255 * pooled_wp[:, covered] / pooled_ws[covered] + 0.5)
    got = np.asarray(zarr.open_group(str(result.output_dir / "mif.ome.zarr"), mode="r")["0"][:])
    assert np.abs(got[:, covered].astype(float) - expected).max() <= 1


def _direct_tile_probs_windows(slide_path, model, x, y):
    """Probabilities of the 9 overlapping 64-px windows of a 128-px tile (overlap 16)."""
    from virtime.stitch.windows import plan_windows

    tensor = normalized_tile(slide_path, x, y, 128)
    with torch.inference_mode():
        batch = torch.stack([tensor[:, oy : oy + 64, ox : ox + 64]
                             for ox, oy in plan_windows(128, 64, 16)])
        return torch.sigmoid(model(batch)).numpy()
