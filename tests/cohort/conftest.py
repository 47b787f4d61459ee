"""Cohort settings and one 2-process Dask LocalCluster per module (tiny model: tests/conftest.py)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def cohort_config(tmp_path_factory):
    from virtime.translation import TranslateConfig

    cache = tmp_path_factory.mktemp("engine-cache")
    return TranslateConfig(tile_size=128, output_mpp=2.0, backend="onnxruntime",
                           show_progress=False, batch_size=4, window_batch=16, threads=1,
                           min_tissue=0.1, cache_dir=str(cache))


@pytest.fixture(scope="module")
def dask_client():
    """A real dask.distributed LocalCluster: 2 worker processes of 1 thread, 3 tries per task."""
    from cohort_helpers import local_client

    with local_client(2, max_attempts=3) as client:
        yield client
