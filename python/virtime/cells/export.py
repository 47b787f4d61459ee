"""The cell table as AnnData (``.h5ad``), readable by scanpy and squidpy.

``X`` holds the compartment mean probabilities of the 21 protein channels (cells × channels,
float32), ``layers["positive"]`` their calls (uint8), ``obs`` the per-cell columns (phenotype and
compartment as categoricals, flags, areas, owning tile, level-0 position), ``obsm["spatial"]`` the
centroids in µm (``uns["spatial_unit"] = "um"``) so squidpy's radii and distances are in microns,
and ``uns["virtime"]`` the table's metadata (version, model hash, settings, gating table).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from virtime.cells.gating import GatingTable
from virtime.cells.table import read_cells, read_cells_metadata
from virtime.channels import PROTEIN_CHANNELS

__all__ = ["export_anndata", "to_anndata"]


def to_anndata(cells_path: str | os.PathLike[str], gating: GatingTable | None = None) -> Any:
    """An ``anndata.AnnData`` of a slide's cells (``cells.parquet`` or its slide folder).

    ``gating`` re-derives phenotype and flags from the stored positive calls with another table.
    """
    import anndata as ad
    import pandas as pd

    df = read_cells(cells_path)
    meta = read_cells_metadata(cells_path)
    if gating is not None:
        phen, flags = gating.apply(df)
        df = df.drop(columns=[c for c in df.columns if c == "phenotype" or
                              (df[c].dtype == bool and "." not in c)])
        df["phenotype"] = phen.astype(str)
        for k, v in flags.items():
            df[k] = v
        meta["cells.gating"] = gating.summary().to_csv(index=False)
    x = df[[f"{c}.mean" for c in PROTEIN_CHANNELS]].to_numpy(np.float32)
    pos = df[[f"{c}.positive" for c in PROTEIN_CHANNELS]].to_numpy(np.uint8)
    obs_cols = [c for c in df.columns if not c.endswith((".mean", ".positive"))]
    obs = df[obs_cols].copy()
    for c in ("phenotype", "compartment"):
        if c in obs:
            obs[c] = pd.Categorical(obs[c].astype(str))
    obs.index = pd.Index([f"cell{i}" for i in range(len(obs))], name="cell")
    adata = ad.AnnData(X=x, obs=obs, var=pd.DataFrame(index=pd.Index(PROTEIN_CHANNELS,
                                                                       name="channel")))
    adata.layers["positive"] = pos
    adata.obsm["spatial"] = df[["x_um", "y_um"]].to_numpy(np.float64)
    adata.uns["spatial_unit"] = "um"
    adata.uns["virtime"] = {k.replace(".", "_"): v for k, v in meta.items()}
    return adata


def export_anndata(cells_path: str | os.PathLike[str], output: str | os.PathLike[str],
                   gating: GatingTable | None = None) -> Path:
    """Writes :func:`to_anndata` to ``output`` (``.h5ad``) atomically; returns the path."""
    from virtime.io import atomic_path

    adata = to_anndata(cells_path, gating)
    out = Path(output)
    with atomic_path(out) as tmp:
        adata.write_h5ad(tmp)  # h5py writes the name given, whatever its suffix
    return out
