"""Failed tiles leave the tissue mask and every feature's denominator, and are counted (#15.5)."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import tifffile
import zarr
from dying_engine import DyingEngine, Interrupt

import virtime
from virtime.channels import CHANNEL_NAMES, PROTEIN_CHANNELS
from virtime.features import features_from_outputs

pytestmark = pytest.mark.slow

CANVAS_MPP = 2.0  # 0.5 um/px slide and model, output 2 um/px: a canvas pixel is 4x4 level-0 px
TIFF_TILE = 256


def _slide_with_bad_tile(folder, width, height, seed, pick):
    """A clean synthetic slide (with a low-resolution level, so tissue detection never reads
    level 0) and a copy whose level-0 TIFF tile ``pick(tissue)`` is overwritten with garbage."""
    from virtime.simulate.slides import synthetic_he, write_slide

    rgb, tissue = synthetic_he(width, height, 0.5, rng=np.random.default_rng(seed))
    clean = write_slide(folder / "clean.svs", rgb, 0.5, tile=TIFF_TILE, min_level_size=96)
    col, row = pick(tissue)
    bad = folder / "bad.svs"
    shutil.copy(clean, bad)
    with tifffile.TiffFile(bad) as tif:
        page = tif.pages[0]
        assert len(tif.pages) > 1 and page.tilewidth == TIFF_TILE
        k = row * -(-page.imagewidth // TIFF_TILE) + col
        offset, count = page.dataoffsets[k], page.databytecounts[k]
    with open(bad, "r+b") as f:
        f.seek(offset)
        f.write(b"\xff" * count)
    return clean, bad, (col * TIFF_TILE, row * TIFF_TILE)


def _config(**kw):
    from virtime.translation import TranslateConfig

    return TranslateConfig(tile_size=128, output_mpp=CANVAS_MPP, backend="onnxruntime",
                           show_progress=False, batch_size=4, window_batch=16, threads=2,
                           min_tissue=0.1, **kw)


def test_failed_tile_is_left_out_of_mask_and_features(tiny_model, tmp_path, ref, monkeypatch):
    import virtime.features.table as table

    clean, bad, (bx, by) = _slide_with_bad_tile(tmp_path, 768, 512, 11, lambda t: (1, 1))
    cfg = _config()
    virtime.translate(clean, tiny_model, tmp_path / "out", dataclasses.replace(cfg, features=False))
    # The features come from the canvas bands as they are written, tissue under the failed tiles
    # already left out (#16.5): the translation never reads the map back to compute them.
    monkeypatch.setattr(table, "compute_slide_features",
                        lambda *a, **k: pytest.fail("the map was read back for the features"))
    with pytest.warns(UserWarning, match="qc_failed_share_exceeded"):
        result = virtime.translate(bad, tiny_model, tmp_path / "out", cfg)
    monkeypatch.undo()
    c_dir, b_dir = tmp_path / "out" / "clean", result.output_dir

    # Reference: the clean run's tissue and tiles; the failed tiles are the grid tiles inside the
    # overwritten TIFF tile; their footprint (128 level-0 px = 32 canvas px) leaves the mask.
    tissue = np.load(c_dir / "tissue_mask.npy")
    tiles = pd.read_parquet(c_dir / "tiles.parquet")
    inside = tiles[(tiles.x >= bx) & (tiles.x < bx + TIFF_TILE)
                   & (tiles.y >= by) & (tiles.y < by + TIFF_TILE)]
    assert len(inside) >= 2
    footprint = np.zeros_like(tissue)
    for x, y in inside[["x", "y"]].to_numpy():
        footprint[y // 4 : (y + 128) // 4, x // 4 : (x + 128) // 4] = True
    want_tissue = tissue & ~footprint
    lost = tissue & footprint
    assert lost.sum() > 0.05 * tissue.sum()  # above the default 5 % threshold
    np.testing.assert_array_equal(np.load(b_dir / "tissue_mask.npy"), want_tissue)

    prob = np.asarray(zarr.open_group(str(b_dir / "mif.ome.zarr"), mode="r")["0"][:])
    analyse = [c for c in CHANNEL_NAMES if c in PROTEIN_CHANNELS]
    want = ref.ref_features(prob, want_tissue, list(CHANNEL_NAMES), analyse, 0.5,
                            round(64.0 / CANVAS_MPP))
    # not vacuous: positive channels exist, which zeros under a failed tile would dilute
    assert sum(want[k] > 0.5 for k in want if k.endswith(".density")) >= 3
    df = pd.read_parquet(b_dir / "features.parquet")
    row = df.iloc[0].to_dict()
    ref.assert_features_close(row, want, rtol=1e-9)
    assert int(row["tiles_failed"]) == len(inside) == result.record["tiles_failed"]
    assert row["tissue_mm2_failed"] == pytest.approx(lost.sum() * CANVAS_MPP**2 / 1e6, rel=1e-12)
    assert row["tissue.area_mm2"] == pytest.approx(want_tissue.sum() * CANVAS_MPP**2 / 1e6)
    assert row["failed_tissue_share"] == pytest.approx(lost.sum() / tissue.sum())
    assert bool(row["qc_failed_share_exceeded"]) is True

    # Recomputing from the outputs gives the same row; a looser threshold clears the flag.
    again = features_from_outputs(b_dir, write=False, max_failed_share=0.9)
    assert again["qc_failed_share_exceeded"] is False and again["tiles_failed"] == len(inside)
    ref.assert_features_close(again, want, rtol=1e-9)
    clean_row = features_from_outputs(c_dir, write=False)
    assert (clean_row["tiles_failed"], clean_row["tissue_mm2_failed"]) == (0, 0.0)
    assert not (c_dir / "failed_mask.npy").exists()


def _most_tissue_in_first_band(tissue):
    """The TIFF tile of canvas band 0 (level-0 rows < 1024) holding the most tissue."""
    cols = tissue.shape[1] // TIFF_TILE
    share = [(tissue[r * 256 : (r + 1) * 256, c * 256 : (c + 1) * 256].mean(), c, r)
             for r in range(4) for c in range(cols)]
    _, c, r = max(share)
    return c, r


def test_failures_of_an_interrupted_run_survive_resume(tiny_model, tmp_path):
    from virtime.engines import create_engine

    _, bad, _ = _slide_with_bad_tile(tmp_path, 256, 1536, 12, _most_tissue_in_first_band)
    cfg = _config(features=False)
    with pytest.warns(UserWarning, match="qc_failed"):  # reference: one uninterrupted run
        whole = virtime.translate(bad, tiny_model, tmp_path / "ref", dataclasses.replace(
            cfg, features=True))
    assert whole.tiles_failed >= 1
    engine = create_engine(tiny_model, backend=cfg.backend, max_batch=16, window=64)
    with pytest.raises(Interrupt):
        virtime.translate(bad, tiny_model, tmp_path / "cut", cfg,
                          engine=DyingEngine(engine, calls=4, min_batch=3))
    cut = tmp_path / "cut" / "bad"
    manifest = json.loads((cut / "mif.ome.zarr.manifest.json").read_text())
    finished_rows = len(manifest["stages"].get("level0_bands", [])) * 256 * 4  # level-0 rows
    # a failed tile lies in bands the interrupted run finished: the resumed part never reads it
    assert any(f["y"] + 128 <= finished_rows for f in whole.record["failed_tiles"])
    with pytest.warns(UserWarning, match="qc_failed"):
        resumed = virtime.translate(bad, tiny_model, tmp_path / "cut", dataclasses.replace(
            cfg, features=True))
    assert not resumed.skipped
    assert resumed.record["failed_tiles"] == whole.record["failed_tiles"]
    for name in ("tissue_mask.npy", "failed_mask.npy"):
        np.testing.assert_array_equal(np.load(cut / name), np.load(whole.output_dir / name))
    a = pd.read_parquet(whole.output_dir / "features.parquet")
    b = pd.read_parquet(cut / "features.parquet")
    pd.testing.assert_frame_equal(a, b)
