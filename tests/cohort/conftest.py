"""A tiny random GigaTIME, small simulated slides and one 2-process Dask LocalCluster per module."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory):
    """Reduced-width GigaTIME taking 64-px windows at 0.5 um/px (so cohort tests stay fast)."""
    import torch

    from virtime.models import GigaTIME, save

    torch.manual_seed(0)
    model = GigaTIME(filters=[4, 8, 16, 32, 64]).eval()
    with torch.no_grad():  # some channels above 0.5, some below
        model.final.bias.copy_(torch.linspace(-2, 2, 23))
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save(model, path, input_mpp=0.5, window=64)
    return path


@pytest.fixture(scope="session")
def tiny_model(tiny_weights):
    from virtime.models import load

    return load(tiny_weights)


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
    import dask
    from distributed import Client, LocalCluster

    with dask.config.set({"distributed.scheduler.allowed-failures": 2}):
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                               dashboard_address=":0")
    client = Client(cluster)
    yield client
    client.close()
    cluster.close()
