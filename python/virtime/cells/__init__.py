"""Virtual single cells: nuclei from the virtual DAPI, cells, marker calls, phenotypes, features.

:mod:`~virtime.cells.segment` (nuclei and cells) → :mod:`~virtime.cells.measure` (per-cell means)
→ :mod:`~virtime.cells.region` (a tile with its halo, owned cells) → :mod:`~virtime.cells.collector`
(streaming over a slide's tiles) → :mod:`~virtime.cells.table` (``cells.parquet``) →
:mod:`~virtime.cells.gating` (phenotypes) → :mod:`~virtime.cells.features` (slide features) and
:mod:`~virtime.cells.export` (AnnData).
"""

from __future__ import annotations

from virtime.cells.collector import CellCollector, CellSummary, cells_from_map, tile_probabilities
from virtime.cells.config import EXPANSION_UM, CellConfig
from virtime.cells.export import export_anndata, to_anndata
from virtime.cells.features import cell_features
from virtime.cells.gating import GatingTable, default_gating
from virtime.cells.region import cells_in_region
from virtime.cells.table import CELLS_FILE, CellTableWriter, read_cells, read_cells_metadata

__all__ = [
    "CELLS_FILE",
    "EXPANSION_UM",
    "CellCollector",
    "CellConfig",
    "CellSummary",
    "CellTableWriter",
    "GatingTable",
    "cell_features",
    "cells_from_map",
    "cells_in_region",
    "default_gating",
    "export_anndata",
    "read_cells",
    "read_cells_metadata",
    "tile_probabilities",
    "to_anndata",
]
