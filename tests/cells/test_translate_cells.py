"""translate --cells: cells.parquet beside the other outputs, cells.* in the slide features."""

from __future__ import annotations

import pytest


@pytest.mark.slow
def test_translate_with_cells_and_overlapping_tiles(tmp_path):
    import numpy as np

    from virtime.cells import read_cells, read_cells_metadata
    from virtime.features import read_features
    from virtime.models import load_demo
    from virtime.simulate.slides import write_slide
    from virtime.simulate.tissue import render_tissue
    from virtime.translation import TranslateConfig, translate

    rgb, _, _ = render_tissue((384, 512), mpp=0.5, rng=np.random.default_rng(3))
    slide = write_slide(tmp_path / "s.svs", rgb, 0.5)
    config = TranslateConfig(tile_size=256, overlap=32, show_progress=False, backend="torch",
                             cells=True)
    res = translate(slide, load_demo(), tmp_path / "out", config)
    cells = read_cells(res.output_dir)
    assert len(cells) > 50
    assert cells["tile"].nunique() > 1
    assert cells[["x", "y"]].duplicated().sum() == 0  # no cell reported by two tiles
    assert cells.x.between(0, 512).all() and cells.y.between(0, 384).all()
    meta = read_cells_metadata(res.output_dir)
    assert meta["model_hash"] == res.record["model_hash"]
    feats, _ = read_features(res.output_dir / "features.parquet")
    assert feats["cells.total.density"].iloc[0] > 0
    assert "cells.cd8_t~tumour.coloc_z" in feats.columns
    assert res.record["timings_seconds"]["cells"] > 0
    assert translate(slide, load_demo(), tmp_path / "out", config).skipped  # done, with cells
