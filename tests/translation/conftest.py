"""A tiny random GigaTIME (with a model card) and small slides for whole-slide translation tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory):
    """Reduced-width GigaTIME taking 64-px windows at 0.5 um/px (so tests stay fast)."""
    import torch

    from virtime.models import GigaTIME, save

    torch.manual_seed(0)
    model = GigaTIME(filters=[4, 8, 16, 32, 64]).eval()
    # Nudge the output bias so some channels cross 0.5 and others do not.
    with torch.no_grad():
        model.final.bias.copy_(torch.linspace(-2, 2, 23))
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save(model, path, input_mpp=0.5, window=64)
    return path


@pytest.fixture(scope="session")
def tiny_model(tiny_weights):
    from virtime.models import load

    return load(tiny_weights)


@pytest.fixture(scope="session")
def small_slide(tmp_path_factory):
    from virtime.simulate.slides import make_slide

    return make_slide(tmp_path_factory.mktemp("tslides") / "small.svs", 768, 512, mpp=0.5, seed=11)


@pytest.fixture
def fast_config():
    from virtime.translation import TranslateConfig

    return TranslateConfig(tile_size=128, output_mpp=2.0, backend="onnxruntime", show_progress=False,
                           batch_size=4, window_batch=16, threads=2, min_tissue=0.1)
