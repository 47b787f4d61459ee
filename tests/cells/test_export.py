"""cells.parquet streaming + metadata, and the AnnData export round trip (API and CLI)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from virtime import __version__
from virtime.cells import (
    CELLS_FILE,
    cells_from_map,
    export_anndata,
    read_cells,
    read_cells_metadata,
)
from virtime.channels import PROTEIN_CHANNELS


@pytest.fixture(scope="module")
def slide_cells(gt_region, tmp_path_factory):
    probs, _ = gt_region
    out = tmp_path_factory.mktemp("slide")
    s = cells_from_map(probs, 0.5, tile_size=200, out_dir=out)
    return out, s


def test_table_is_streamed_atomically_with_metadata(slide_cells):
    out, s = slide_cells
    assert s.path == out / CELLS_FILE and sorted(p.name for p in out.iterdir()) == [CELLS_FILE]
    import pyarrow.parquet as pq

    assert pq.ParquetFile(s.path).metadata.num_row_groups == s.tiles  # one group per tile
    df = read_cells(out)
    assert len(df) == s.cells > 100
    meta = read_cells_metadata(out)
    assert meta["version"] == __version__ and "model_hash" in meta
    assert float(meta["cells.tumour_mm2"]) == pytest.approx(s.tumour_mm2) and s.tumour_mm2 > 0
    for c in PROTEIN_CHANNELS:
        assert df[f"{c}.mean"].dtype == np.float32 and df[f"{c}.positive"].dtype == bool
    assert set(df.compartment) == {"tumour", "stroma"}
    assert {"phenotype", "proliferating", "pdl1_tumour", "x_um", "y_um"} <= set(df.columns)


def test_anndata_round_trip(slide_cells, tmp_path):
    import anndata as ad

    out, _ = slide_cells
    df = read_cells(out)
    path = export_anndata(out, tmp_path / "cells.h5ad")
    a = ad.read_h5ad(path)
    assert a.shape == (len(df), len(PROTEIN_CHANNELS))
    assert list(a.var_names) == list(PROTEIN_CHANNELS)
    np.testing.assert_array_equal(a.X, df[[f"{c}.mean" for c in PROTEIN_CHANNELS]].to_numpy())
    np.testing.assert_array_equal(a.obsm["spatial"], df[["x_um", "y_um"]].to_numpy())
    np.testing.assert_array_equal(a.layers["positive"].astype(bool),
                                  df[[f"{c}.positive" for c in PROTEIN_CHANNELS]].to_numpy())
    assert isinstance(a.obs["phenotype"].dtype, pd.CategoricalDtype)
    assert (a.obs["phenotype"].astype(str).to_numpy() == df.phenotype.to_numpy()).all()
    assert a.uns["spatial_unit"] == "um" and a.uns["virtime"]["version"] == __version__


def test_cli_export_with_a_user_gating_table(slide_cells, tmp_path):
    import anndata as ad

    from virtime.cli import main

    out, _ = slide_cells
    table = tmp_path / "g.csv"
    table.write_text("kind,name,rule\nphenotype,t_cell,CD3+\n")
    h5 = tmp_path / "c.h5ad"
    assert main(["cells", "export", "--anndata", str(out), "-o", str(h5), "--gating",
                 str(table), "-q"]) == 0
    a = ad.read_h5ad(h5)
    df = read_cells(out)
    assert set(a.obs["phenotype"].astype(str)) <= {"t_cell", "other"}
    assert (a.obs["phenotype"] == "t_cell").sum() == df["CD3.positive"].sum()
    assert main(["cells", "export", "--anndata", str(tmp_path / "nowhere"), "-o",
                 str(h5)]) == 2
