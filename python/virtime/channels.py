"""The 23 output channels of the GigaTIME checkpoints, in checkpoint order.

One registry so that every stage (models, features, statistics, plots) agrees on order, role and
colour. TRITC and Cy5 are background channels of the COMET platform: models predict them, and
slide features are computed for them too, but only the 21 protein channels are tested for
discoveries; the background channels are the statistics' negative controls.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "Channel",
    "CHANNELS",
    "CHANNEL_NAMES",
    "PROTEIN_CHANNELS",
    "PROTEIN_INDICES",
    "BACKGROUND_CHANNELS",
    "channel_index",
    "get_channel",
]


@dataclass(frozen=True)
class Channel:
    """One output channel: its name, role, cellular compartment and display colour (hex RGB).

    Display colours are chosen so that every two protein channels differ by a CIELAB ΔE*ab of at
    least 20 (tests/report/test_legibility.py), so a legend or an overlay tells them apart.
    """

    name: str
    role: Literal["protein", "background"]
    compartment: Literal["nuclear", "membrane/cytoplasm", "none"]
    color: str


CHANNELS: tuple[Channel, ...] = (
    Channel("DAPI", "protein", "nuclear", "#0000FF"),
    Channel("TRITC", "background", "none", "#808080"),
    Channel("Cy5", "background", "none", "#505050"),
    Channel("PD-1", "protein", "membrane/cytoplasm", "#FF7F00"),
    Channel("CD14", "protein", "membrane/cytoplasm", "#A65628"),
    Channel("CD4", "protein", "membrane/cytoplasm", "#F781BF"),
    Channel("T-bet", "protein", "membrane/cytoplasm", "#984EA3"),
    Channel("CD34", "protein", "membrane/cytoplasm", "#E41A1C"),
    Channel("CD68", "protein", "membrane/cytoplasm", "#FFD700"),
    Channel("CD16", "protein", "membrane/cytoplasm", "#66C2A5"),
    Channel("CD11c", "protein", "membrane/cytoplasm", "#FC8D62"),
    Channel("CD138", "protein", "membrane/cytoplasm", "#8DA0CB"),
    Channel("CD20", "protein", "membrane/cytoplasm", "#00E187"),
    Channel("CD3", "protein", "membrane/cytoplasm", "#00FF00"),
    Channel("CD8", "protein", "membrane/cytoplasm", "#FF00FF"),
    Channel("PD-L1", "protein", "membrane/cytoplasm", "#0069FF"),
    Channel("CK", "protein", "membrane/cytoplasm", "#00FFFF"),
    Channel("Ki67", "protein", "nuclear", "#FFFF00"),
    Channel("Tryptase", "protein", "membrane/cytoplasm", "#D2C369"),
    Channel("Actin-D", "protein", "membrane/cytoplasm", "#C369FF"),
    Channel("Caspase3-D", "protein", "membrane/cytoplasm", "#7570B3"),
    Channel("PHH3-B", "protein", "nuclear", "#E7298A"),
    Channel("Transgelin", "protein", "membrane/cytoplasm", "#66A61E"),
)

CHANNEL_NAMES: tuple[str, ...] = tuple(c.name for c in CHANNELS)
PROTEIN_CHANNELS: tuple[str, ...] = tuple(c.name for c in CHANNELS if c.role == "protein")
PROTEIN_INDICES: tuple[int, ...] = tuple(i for i, c in enumerate(CHANNELS) if c.role == "protein")
BACKGROUND_CHANNELS: tuple[str, ...] = tuple(c.name for c in CHANNELS if c.role == "background")

_INDEX = {c.name: i for i, c in enumerate(CHANNELS)}


def channel_index(name: str) -> int:
    """Position of ``name`` in checkpoint order; raises KeyError naming the valid channels."""
    try:
        return _INDEX[name]
    except KeyError:
        raise KeyError(f"unknown channel {name!r}; known: {', '.join(CHANNEL_NAMES)}") from None


def get_channel(name: str) -> Channel:
    """The :class:`Channel` record for ``name``."""
    return CHANNELS[channel_index(name)]
