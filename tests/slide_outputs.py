"""Comparing two slide output folders (what a rerun or another route must reproduce).

Importable from any test because tests/conftest.py puts this folder on ``sys.path``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import zarr


def assert_same_outputs(a: Path, b: Path, tables: tuple[str, ...] = ("tiles.parquet",)) -> None:
    """The two folders hold the same virtual mIF (every pyramid level) and the same ``tables``."""
    za = zarr.open_group(str(a / "mif.ome.zarr"), mode="r")
    zb = zarr.open_group(str(b / "mif.ome.zarr"), mode="r")
    levels = [d["path"] for d in za.attrs["multiscales"][0]["datasets"]]
    assert levels == [d["path"] for d in zb.attrs["multiscales"][0]["datasets"]]
    for level in levels:
        np.testing.assert_array_equal(np.asarray(za[level][:]), np.asarray(zb[level][:]))
    for name in tables:
        pd.testing.assert_frame_equal(pd.read_parquet(a / name), pd.read_parquet(b / name))
