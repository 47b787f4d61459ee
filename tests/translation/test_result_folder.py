"""``TranslateResult.folder``: the slide folder's tables and map, equal to reading the files."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import zarr

import virtime
from virtime.errors import InputDataError
from virtime.io import SlideFolder


def test_folder_reads_what_translate_wrote(small_slide, tiny_model, fast_config, tmp_path):
    cfg = dataclasses.replace(fast_config, cells=True)
    result = virtime.translate(small_slide, tiny_model, tmp_path, cfg)
    folder = result.folder
    assert isinstance(folder, SlideFolder) and folder.path == result.output_dir
    d = result.output_dir
    pd.testing.assert_frame_equal(folder.features(), pq.read_table(d / "features.parquet")
                                  .to_pandas())
    pd.testing.assert_frame_equal(folder.cells(), pd.read_parquet(d / "cells.parquet"))
    level0 = zarr.open_group(str(d / "mif.ome.zarr"), mode="r")["0"][:]
    mif = folder.mif()
    assert mif.shape == level0.shape and mif.dtype == np.uint8 and level0.shape[0] == 23
    np.testing.assert_array_equal(np.asarray(mif[:]), level0)
    np.testing.assert_array_equal(np.asarray(mif[3, 5:20, 7:30]), level0[3, 5:20, 7:30])


def test_folder_names_what_is_missing(small_slide, tiny_model, fast_config, tmp_path):
    result = virtime.translate(small_slide, tiny_model, tmp_path,
                               dataclasses.replace(fast_config, features=False))
    with pytest.raises(InputDataError, match=r"cells\.parquet: not found .*--cells"):
        result.folder.cells()
    (result.output_dir / "summary.json").unlink()  # as an interrupted rerun leaves it
    for read in (result.folder.features, result.folder.mif):
        with pytest.raises(InputDataError, match="summary.json"):
            read()
