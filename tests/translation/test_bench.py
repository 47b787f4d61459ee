"""``virtime bench`` runs end to end, and the official-notebook loop it compares against agrees
with the pipeline's canvas (two independent implementations of the non-overlapping layout)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import zarr

import virtime
from virtime.bench import reference_loop, run_bench
from virtime.cli import main


@pytest.mark.slow
def test_reference_loop_matches_pipeline_canvas(small_slide, tiny_model, fast_config, tmp_path):
    cfg = dataclasses.replace(fast_config, tile_size=128, features=False)
    result = virtime.translate(small_slide, tiny_model, tmp_path, cfg)
    import pandas as pd

    xy = pd.read_parquet(result.output_dir / "tiles.parquet")[["x", "y"]].to_numpy()
    ref = reference_loop(small_slide, tiny_model, xy, 128, 64, 4, (128, 192))
    got = np.asarray(zarr.open_group(str(result.output_dir / "mif.ome.zarr"), mode="r")["0"][:])
    covered = ref.sum(axis=0) > 0
    diff = np.abs(got.astype(float) - np.floor(ref * 255 + 0.5))[:, covered]
    assert covered.mean() > 0.3 and diff.max() <= 1


@pytest.mark.slow
def test_run_bench_reports_consistent_numbers(tiny_model, fast_config, tmp_path):
    r = run_bench(tiny_model, size=512, config=dataclasses.replace(fast_config, tile_size=128),
                  reference_tiles=2, workdir=str(tmp_path))
    assert r.tiles > 0 and r.reference_tiles_per_s > 0 and r.engine_tiles_per_s > 0
    assert r.speedup_over_reference == r.pipeline_tiles_per_s / r.reference_tiles_per_s
    assert {"engine", "read_cpu", "postprocess", "write"} <= set(r.stage_seconds)


@pytest.mark.slow
def test_bench_cli(tiny_weights, capsys):
    assert main(["bench", "--weights", str(tiny_weights), "--size", "512", "--reference-tiles",
                 "1", "--backend", "onnxruntime", "--json"]) == 0
    assert '"speedup_over_reference"' in capsys.readouterr().out
