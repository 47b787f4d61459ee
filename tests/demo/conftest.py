"""A tiny translator with a card (64-px windows at 0.5 um/px) for the end-to-end demo test."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_demo_weights(tmp_path_factory):
    """Random reduced-width GigaTIME whose logits are standardised per channel, so its
    probabilities straddle 0.5 and every channel's density varies between slides."""
    import numpy as np
    from tiny_models import standardised_gigatime

    from virtime.models import save
    from virtime.simulate.tissue import render_tile

    rgb = np.stack([render_tile(64, rng=np.random.default_rng(i))[0] for i in range(4)])
    model = standardised_gigatime(rgb)
    path = tmp_path_factory.mktemp("demo_model") / "tiny.safetensors"
    save(model, path, input_mpp=0.5, window=64)
    return path
