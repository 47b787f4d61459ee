"""Immune contexture: T-cell density inside CK-positive tumour regions versus the stroma.

Beyond the GigaTIME paper: the classic inflamed / excluded / desert phenotypes (Chen & Mellman,
Nature 2017) from virtual mIF. Tumour *regions* are defined at the scale of the spatial bins
(default 64 µm), not pixels, because CK marks epithelial cytoplasm while infiltrating T cells sit
between tumour cells: a bin is **tumour** when its CK-positive fraction of tissue pixels is at least
``tumour_ck_fraction`` (default 0.25), and **stroma** when it has tissue but less CK. Everything is
computed from the binned counts the accumulator already keeps, so it streams exactly.

For a T-cell channel X (CD8, CD3):

* ``X.tumour_density`` = X-positive pixels in tumour bins / tissue pixels in tumour bins
* ``X.stroma_density`` = the same over stroma bins
* ``X.infiltration_ratio`` = tumour_density / stroma_density (NaN when stroma density is 0)

Phenotype (from the ``phenotype_channel``, default CD8) with cut-off ``density_cutoff`` (default
0.005 positive-area fraction, about 60 cells/mm² for ~80 µm² of positive area per T cell):

* ``inflamed``: tumour_density ≥ cutoff;
* ``excluded``: tumour_density < cutoff and stroma_density ≥ cutoff;
* ``desert``: both below the cutoff;
* ``undetermined``: no tumour bins (or no tissue), or tumour below the cutoff with no stroma
  bins to tell excluded from desert.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["ContextureConfig", "immune_contexture", "PHENOTYPES"]

PHENOTYPES: tuple[str, ...] = ("inflamed", "excluded", "desert", "undetermined")


@dataclass(frozen=True)
class ContextureConfig:
    """Cut-offs of the immune contexture (documented in the module docstring)."""

    tumour_channel: str = "CK"
    tcell_channels: tuple[str, ...] = ("CD8", "CD3")
    phenotype_channel: str = "CD8"
    tumour_ck_fraction: float = 0.25
    density_cutoff: float = 0.005


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else math.nan


def immune_contexture(
    bins: np.ndarray, channels: tuple[str, ...], config: ContextureConfig | None = None
) -> dict[str, float | str]:
    """Contexture features from binned counts.

    Parameters
    ----------
    bins : ndarray (nby, nbx, K + 1)
        Positive counts per analysed channel, last slot tissue pixels (as the accumulator keeps).
    channels : tuple of str
        Names of the K analysed channels.
    config : ContextureConfig
        Cut-offs.

    Returns
    -------
    dict
        ``tumour.area_fraction``, ``<X>.tumour_density``, ``<X>.stroma_density``,
        ``<X>.infiltration_ratio`` for each T-cell channel present, and ``immune.phenotype``.
        Empty when the tumour channel is not analysed.
    """
    config = config if config is not None else ContextureConfig()
    out: dict[str, float | str] = {}
    if config.tumour_channel not in channels:
        return out
    flat = bins.reshape(-1, bins.shape[-1]) if bins.size else np.zeros((0, len(channels) + 1))
    tissue = flat[:, -1]
    ck = flat[:, channels.index(config.tumour_channel)]
    has = tissue > 0
    frac = np.divide(ck, tissue, out=np.zeros_like(ck), where=has)
    tumour = has & (frac >= config.tumour_ck_fraction)
    stroma = has & ~tumour
    t_tis = float(tissue[tumour].sum())
    s_tis = float(tissue[stroma].sum())
    out["tumour.area_fraction"] = _ratio(t_tis, t_tis + s_tis)
    for name in config.tcell_channels:
        if name not in channels:
            continue
        pos = flat[:, channels.index(name)]
        td = _ratio(float(pos[tumour].sum()), t_tis)
        sd = _ratio(float(pos[stroma].sum()), s_tis)
        out[f"{name}.tumour_density"] = td
        out[f"{name}.stroma_density"] = sd
        out[f"{name}.infiltration_ratio"] = _ratio(td, sd) if not math.isnan(sd) else math.nan
    out["immune.phenotype"] = _phenotype(out, config)
    return out


def _phenotype(feats: dict[str, float | str], config: ContextureConfig) -> str:
    td = feats.get(f"{config.phenotype_channel}.tumour_density", math.nan)
    sd = feats.get(f"{config.phenotype_channel}.stroma_density", math.nan)
    assert isinstance(td, float) and isinstance(sd, float)
    if math.isnan(td):
        return "undetermined"
    if td >= config.density_cutoff:
        return "inflamed"
    if math.isnan(sd):
        return "undetermined"
    if sd >= config.density_cutoff:
        return "excluded"
    return "desert"
