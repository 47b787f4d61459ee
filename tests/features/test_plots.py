"""Plots: bar heights and colourised panels carry the values and channel colours."""

from __future__ import annotations

import numpy as np

from virtime.channels import CHANNEL_NAMES
from virtime.features.plots import (
    colourise,
    plot_activation_panel,
    plot_channel_bars,
    save_figure,
)


def test_channel_bars(tmp_path):
    feats = {"CD8.density": 0.2, "CD3.density": 0.4, "CK.density": 0.1, "CD8.mean": 9.0}
    fig = plot_channel_bars(feats, channels=["CD3", "CD8", "CK"])
    heights = [p.get_height() for p in fig.axes[0].patches]
    assert heights == [0.4, 0.2, 0.1]
    assert tuple(fig.axes[0].patches[1].get_facecolor()[:3]) == (1.0, 0.0, 1.0)  # CD8 magenta
    save_figure(fig, tmp_path / "bars.png")
    assert (tmp_path / "bars.png").stat().st_size > 1000


def test_activation_panel(tmp_path, rng):
    prob = rng.integers(0, 256, (23, 30, 40), dtype=np.uint8)
    rgb = colourise(prob[CHANNEL_NAMES.index("CK")], "CK")
    np.testing.assert_allclose(rgb[..., 0], 0.0)  # CK is cyan: no red
    np.testing.assert_allclose(rgb[..., 1], prob[CHANNEL_NAMES.index("CK")] / 255.0)
    fig = plot_activation_panel(prob, CHANNEL_NAMES, tissue=np.ones((30, 40), bool))
    assert len([ax for ax in fig.axes if ax.images]) == 6
    save_figure(fig, tmp_path / "panel.png")
    assert (tmp_path / "panel.png").stat().st_size > 1000
