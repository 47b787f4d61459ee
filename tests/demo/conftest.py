"""A tiny translator with a card (64-px windows at 0.5 um/px) for the end-to-end demo test."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_demo_weights(tmp_path_factory):
    """Random reduced-width GigaTIME whose logits are standardised per channel, so its
    probabilities straddle 0.5 and every channel's density varies between slides."""
    import numpy as np
    import torch

    from virtime.models import GigaTIME, save, to_model_input
    from virtime.simulate.tissue import render_tile

    torch.manual_seed(0)
    model = GigaTIME(filters=[4, 8, 16, 32, 64]).eval()
    rgb = np.stack([render_tile(64, rng=np.random.default_rng(i))[0] for i in range(4)])
    with torch.no_grad():
        model.final.bias.zero_()
        logits = model(to_model_input(rgb))
        mu, sd = logits.mean(dim=(0, 2, 3)), logits.std(dim=(0, 2, 3))
        model.final.weight.div_(sd.view(-1, 1, 1, 1))
        model.final.bias.copy_(-mu / sd)
    path = tmp_path_factory.mktemp("demo_model") / "tiny.safetensors"
    save(model, path, input_mpp=0.5, window=64)
    return path
