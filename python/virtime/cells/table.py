"""The per-slide cell table: its columns, building rows from measurements, streaming Parquet I/O.

One row per cell. Positions are level-0 pixels (``x``, ``y``, nucleus centroid) and microns
(``x_um``, ``y_um`` = level-0 × slide mpp); areas in µm²; ``<channel>.mean`` is the compartment
mean probability and ``<channel>.positive`` its call for the 21 protein channels; ``phenotype``
and one boolean column per flag come from the gating table; ``compartment`` is ``tumour`` or
``stroma`` (CK-positive neighbourhood, :class:`~virtime.cells.config.CellConfig`).

:class:`CellTableWriter` appends row groups (through :class:`virtime.io.ParquetStream`) to a
temporary file in the slide folder and renames it to ``cells.parquet`` on :meth:`~CellTableWriter.close`, stamping ``virtime.version``,
``virtime.model_hash`` and the cell settings in the schema metadata (and what is known only at the
end, e.g. ``virtime.cells.tumour_mm2``, in the file footer; :func:`read_cells_metadata` reads
both), so memory stays flat however many cells a slide has and a reader never sees half a table.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from virtime.cells.config import CellConfig
from virtime.cells.gating import GatingTable
from virtime.channels import CHANNEL_NAMES, PROTEIN_CHANNELS
from virtime.errors import InputDataError
from virtime.io import SlideFolder

__all__ = ["CELLS_FILE", "CellTableWriter", "cell_frame", "read_cells", "read_cells_metadata"]

CELLS_FILE = SlideFolder.CELLS  # the name is defined once, in virtime.io.SlideFolder
_PROTEIN_IDX = [CHANNEL_NAMES.index(c) for c in PROTEIN_CHANNELS]


def cell_frame(cells: Mapping[str, np.ndarray], *, model_mpp: float, scale: float = 1.0,
               config: CellConfig = CellConfig(), gating: GatingTable | None = None,
               tile: np.ndarray | int = -1) -> pd.DataFrame:
    """Cell-table rows from :func:`~virtime.cells.region.cells_in_region` measurements.

    Parameters
    ----------
    cells
        Measurements in global model pixels.
    model_mpp
        The model's µm/px; ``scale`` is model pixels per level-0 pixel (slide mpp / model mpp).
    gating
        Phenotype rules (default: the shipped table).
    tile
        Owning tile index per cell (or one for all).
    """
    from virtime.cells.gating import default_gating

    gating = gating or default_gating()
    n = len(cells["x"])
    slide_mpp = model_mpp * scale
    x0 = (np.asarray(cells["x"], np.float64) + 0.5) / scale - 0.5  # model px centre -> level 0
    y0 = (np.asarray(cells["y"], np.float64) + 0.5) / scale - 0.5
    area = model_mpp * model_mpp
    mean = np.asarray(cells["mean"], np.float32).reshape(n, len(CHANNEL_NAMES))
    ck = np.asarray(cells["ck_fraction"], np.float32)
    cols: dict[str, Any] = {
        "tile": np.broadcast_to(np.asarray(tile, np.int64), (n,)).copy(),
        "x": x0, "y": y0, "x_um": x0 * slide_mpp, "y_um": y0 * slide_mpp,
        "nucleus_area_um2": (np.asarray(cells["nucleus_px"]) * area).astype(np.float32),
        "cell_area_um2": (np.asarray(cells["cell_px"]) * area).astype(np.float32),
        "ck_fraction": ck,
        "compartment": np.where(ck >= config.compartment_threshold, "tumour", "stroma"),
    }
    for i in _PROTEIN_IDX:
        cols[f"{CHANNEL_NAMES[i]}.mean"] = mean[:, i]
    for i in _PROTEIN_IDX:
        name = CHANNEL_NAMES[i]
        cols[f"{name}.positive"] = mean[:, i] > config.threshold(name)
    frame = pd.DataFrame(cols)
    phen, flags = gating.apply(frame)
    frame["phenotype"] = phen.astype(str)
    for k, v in flags.items():
        frame[k] = v
    return frame


class CellTableWriter:
    """Streams cell rows into ``path`` (a temporary name until :meth:`close`).

    Parameters
    ----------
    path
        The final ``cells.parquet``.
    model_hash
        Stamped as ``virtime.model_hash`` with ``virtime.version``.
    config, gating
        Recorded in the metadata (``virtime.cells.config``, ``virtime.cells.gating``).
    """

    def __init__(self, path: str | os.PathLike[str], *, model_hash: str = "",
                 config: CellConfig = CellConfig(), gating: GatingTable | None = None) -> None:
        from virtime.cells.gating import default_gating
        from virtime.io import ParquetStream

        self.path = Path(path)
        self._gating = gating or default_gating()
        self._stream = ParquetStream(self.path, model_hash=model_hash, metadata={
            "cells.config": json.dumps(asdict(config), default=dict),
            "cells.gating": self._gating.summary().to_csv(index=False)})

    @property
    def rows(self) -> int:
        """Rows written so far."""
        return self._stream.rows

    def write(self, frame: pd.DataFrame) -> None:
        """Appends rows (one row group)."""
        self._stream.write(frame)

    def close(self, extra_metadata: Mapping[str, Any] | None = None) -> Path:
        """Finishes the file (metadata + ``extra_metadata``) and renames it into place."""
        if self._stream.schema is None:  # no cells at all: an empty table with every column
            empty = cell_frame({"x": np.zeros(0), "y": np.zeros(0), "nucleus_px": np.zeros(0),
                                "cell_px": np.zeros(0), "mean": np.zeros((0, len(CHANNEL_NAMES))),
                                "ck_fraction": np.zeros(0)}, model_mpp=1.0, gating=self._gating)
            self.write(empty)
        if extra_metadata:  # known only at the end: file key-value metadata (the footer)
            self._stream.add_footer_metadata({f"cells.{k}": v for k, v in extra_metadata.items()})
        return self._stream.close()

    def abort(self) -> None:
        """Drops the temporary file; an existing ``cells.parquet`` is left as it was."""
        self._stream.abort()


def read_cells(path: str | os.PathLike[str], columns: list[str] | None = None) -> pd.DataFrame:
    """A cell table (``cells.parquet`` or the slide folder holding it)."""
    p = Path(path)
    p = p / CELLS_FILE if p.is_dir() else p
    if not p.is_file():
        raise InputDataError(f"cells: {p} not found (translate with --cells)")
    schema = _cell_table_schema(p)
    needed = ["x_um", "y_um", *(f"{c}.{m}" for c in PROTEIN_CHANNELS for m in ("mean", "positive"))]
    absent = [c for c in needed if c not in schema.names]
    if absent:
        raise InputDataError(f"{p}: not a virtime cell table (no column {', '.join(absent[:3])}"
                             f"{' …' if len(absent) > 3 else ''}); give a slide folder translated "
                             f"with --cells, or its {CELLS_FILE}")
    return pd.read_parquet(p, columns=columns)


def _cell_table_schema(path: Path) -> Any:
    """The Parquet schema of ``path``; InputDataError naming the file if it is not Parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_schema(path)
    except (pa.ArrowException, OSError) as exc:
        raise InputDataError(f"{path}: not a Parquet file ({str(exc).splitlines()[0]}); give a "
                             f"slide folder translated with --cells, or its {CELLS_FILE}") from exc


def read_cells_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The ``virtime.*`` metadata of a cell table, keys without the ``virtime.`` prefix."""
    import pyarrow.parquet as pq

    p = Path(path)
    p = p / CELLS_FILE if p.is_dir() else p
    raw = {**(_cell_table_schema(p).metadata or {}), **(pq.read_metadata(p).metadata or {})}
    return {k.decode()[len("virtime."):]: v.decode() for k, v in raw.items()
            if k.startswith(b"virtime.")}
