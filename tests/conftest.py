"""Shared fixtures: a fixed-seed rng, GPU skipping, and small synthetic slides made on the fly."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

# Test helper modules in this folder (dying_engine, tiny_models, direct_run, slide_outputs) are
# importable from every test.
sys.path.insert(0, str(Path(__file__).parent))


def _cuda_device_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # torch missing or broken: no GPU tests
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _cuda_device_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture
def rng() -> np.random.Generator:
    """Fixed-seed generator: tests are reproducible, never seeded at random."""
    return np.random.default_rng(20251123)


@pytest.fixture(scope="session")
def slide_dir(tmp_path_factory: pytest.TempPathFactory):
    """Synthetic slides shared by the core tests (made once per session)."""
    from virtime.simulate.slides import make_slide

    folder = tmp_path_factory.mktemp("slides")
    make_slide(folder / "aperio.svs", 2048, 1536, mpp=0.25, fmt="aperio", seed=1)
    make_slide(folder / "generic.tif", 1536, 1024, mpp=0.5, fmt="generic", seed=2)
    make_slide(folder / "nompp.tif", 1024, 1024, mpp=0.5, fmt="generic-no-mpp", seed=3)
    return folder


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory):
    """Reduced-width GigaTIME taking 64-px windows at 0.5 um/px (so tests stay fast)."""
    from tiny_models import save_tiny_gigatime

    return save_tiny_gigatime(tmp_path_factory.mktemp("model") / "tiny.safetensors", seed=0,
                              bias=(-2, 2))


@pytest.fixture
def one_torch_thread():
    """One intra-op torch thread for the test: on a shared 2-core runner, torch's default
    oversubscribes the cores and small convolutions run far slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_model(tiny_weights):
    from virtime.models import load

    return load(tiny_weights)


@pytest.fixture(scope="session")
def small_slide(tmp_path_factory):
    """A 768 x 512 Aperio-like slide at 0.5 um/px for whole-slide translation tests."""
    from virtime.simulate.slides import make_slide

    return make_slide(tmp_path_factory.mktemp("tslides") / "small.svs", 768, 512, mpp=0.5, seed=11)


@pytest.fixture
def fast_config():
    """A translation configuration that keeps whole-slide tests to seconds (tiny tiles, ORT)."""
    from virtime.translation import TranslateConfig

    return TranslateConfig(tile_size=128, output_mpp=2.0, backend="onnxruntime", show_progress=False,
                           batch_size=4, window_batch=16, threads=2, min_tissue=0.1)
