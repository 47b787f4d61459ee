"""Per-slide plots: a channel bar chart of one metric and a colourised activation-map panel.

matplotlib with the Agg backend (files only, no display needed); figures are returned so callers
(the report stage) can place or save them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from virtime.channels import PROTEIN_CHANNELS, get_channel
from virtime.errors import InputDataError

__all__ = ["plot_channel_bars", "plot_activation_panel", "colourise", "save_figure"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _rgb(hex_colour: str) -> np.ndarray:
    h = hex_colour.lstrip("#")
    return np.array([int(h[i:i + 2], 16) for i in (0, 2, 4)], dtype=np.float64) / 255.0


def plot_channel_bars(
    features: Mapping[str, Any],
    metric: str = "density",
    channels: Sequence[str] | None = None,
    title: str = "",
) -> Any:
    """Bar chart of ``<channel>.<metric>`` for each channel, bars in the channel colours."""
    plt = _pyplot()
    names = [c for c in (channels or PROTEIN_CHANNELS) if f"{c}.{metric}" in features]
    if not names:
        raise InputDataError(f"plot_channel_bars: no '<channel>.{metric}' values to plot")
    values = [float(features[f"{c}.{metric}"]) for c in names]
    colours = [_rgb(get_channel(c).color) if c in PROTEIN_CHANNELS else (0.5, 0.5, 0.5)
               for c in names]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.4 * len(names)), 3.2), constrained_layout=True)
    ax.bar(range(len(names)), values, color=colours, edgecolor="black", linewidth=0.5)
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel(metric)
    if title:
        ax.set_title(title)
    return fig


def colourise(prob: np.ndarray, channel: str) -> np.ndarray:
    """(h, w) probability (uint8 x255 or float) -> (h, w, 3) float RGB in the channel colour."""
    p = prob.astype(np.float64) / (255.0 if prob.dtype == np.uint8 else 1.0)
    return np.clip(p, 0.0, 1.0)[..., None] * _rgb(get_channel(channel).color)


def plot_activation_panel(
    prob: np.ndarray,
    channels: Sequence[str],
    selected: Sequence[str] = ("DAPI", "CD3", "CD8", "CK", "CD68", "PD-L1"),
    tissue: np.ndarray | None = None,
    title: str = "",
) -> Any:
    """Grid of activation maps of ``selected`` channels (a low-resolution ``(C, h, w)`` map).

    Each panel shows the probability in the channel's display colour on black; outside tissue
    is dimmed when a mask of the same (h, w) is given.
    """
    plt = _pyplot()
    chosen = [c for c in selected if c in channels]
    if not chosen:
        raise InputDataError(f"plot_activation_panel: none of {list(selected)} in the map")
    ncol = min(3, len(chosen))
    nrow = -(-len(chosen) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.2 * ncol, 3.2 * nrow), squeeze=False,
                             constrained_layout=True)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, name in zip(axes.ravel(), chosen):
        rgb = colourise(np.asarray(prob[list(channels).index(name)]), name)
        if tissue is not None and tissue.shape == rgb.shape[:2]:
            rgb = np.where(tissue[..., None] != 0, rgb, 0.25 * rgb)
        ax.imshow(rgb, interpolation="nearest")
        ax.set_title(name, fontsize=9)
    if title:
        fig.suptitle(title)
    return fig


def save_figure(fig: Any, path: str | os.PathLike[str], dpi: int = 120) -> None:
    """Saves atomically (:func:`virtime.io.atomic_path`) and closes ``fig``; the format is the
    file name's extension (PNG without one)."""
    from virtime.io import atomic_path

    plt = _pyplot()
    fmt = os.path.splitext(os.fspath(path))[1].lstrip(".").lower() or "png"
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, format=fmt)
    finally:
        plt.close(fig)
