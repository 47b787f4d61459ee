"""Settings of virtual single-cell segmentation and measurement (one frozen dataclass).

Lengths are in microns and converted to pixels at the model's mpp, so the same settings serve
GigaTIME (0.25 µm/px) and the bundled demo model (0.5 µm/px).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from virtime.errors import InvalidArgumentError

__all__ = ["EXPANSION_UM", "CellConfig"]

#: Growth of the nucleus that gives the cell (µm). GigaTIME's targets for non-nuclear channels live
#: on an "expanded-nucleus" mask; our simulator draws that mask 2 µm around each nucleus
#: (``render_tissue(expansion_um=2.0)``), so a cell measured over the same 2 µm ring sees exactly
#: the pixels its target was defined on: a larger ring dilutes a positive cell's mean with matrix
#: and neighbours (QuPath's 5 µm default halves a lymphocyte's mean), a smaller one drops signal.
EXPANSION_UM = 2.0


@dataclass(frozen=True)
class CellConfig:
    """How nuclei are found, split, expanded and called positive.

    Attributes
    ----------
    dapi_threshold
        Nuclear pixels: (smoothed) virtual DAPI probability above it (GigaTIME's 0.5).
    smooth_um
        Gaussian sigma applied to DAPI first (0: none); removes single-pixel holes and spurs.
    edt_smooth_um, seed_radius_um
        Touching nuclei are split by a watershed seeded at the local maxima (within
        ``seed_radius_um``) of the distance transform smoothed by ``edt_smooth_um``.
    split_by_lineage
        Also split nuclei where the set of positive lineage markers (CK, CD3, CD20, CD138, CD68,
        CD34, Tryptase, Actin-D) changes: cells of different types that touch.
    min_nucleus_um2
        Smaller nuclei are dropped (specks of a noisy probability map).
    expansion_um
        Cell = nucleus grown by this radius, never into another cell (see :data:`EXPANSION_UM`).
    halo_um
        Context read around a tile from its neighbours: a cell straddling a border is segmented
        and measured whole, and only the tile that owns its centroid reports it.
    compartment_um, compartment_threshold
        A cell is in the tumour compartment when the CK-positive pixel fraction in the
        ``2·compartment_um`` square around its centroid reaches the threshold.
    positive_threshold, thresholds
        A channel is positive on a cell when its compartment mean exceeds the threshold
        (per-channel overrides in ``thresholds``).
    """

    dapi_threshold: float = 0.5
    smooth_um: float = 0.25
    edt_smooth_um: float = 0.75
    seed_radius_um: float = 1.5
    split_by_lineage: bool = True
    min_nucleus_um2: float = 4.0
    expansion_um: float = EXPANSION_UM
    halo_um: float = 16.0
    compartment_um: float = 10.0
    compartment_threshold: float = 0.3
    positive_threshold: float = 0.5
    thresholds: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0.0 < self.dapi_threshold < 1.0:
            raise InvalidArgumentError(f"dapi_threshold must be in (0, 1), got {self.dapi_threshold}")
        for name in ("smooth_um", "edt_smooth_um", "seed_radius_um", "min_nucleus_um2", "expansion_um", "halo_um",
                     "compartment_um"):
            if getattr(self, name) < 0:
                raise InvalidArgumentError(f"{name} must be >= 0, got {getattr(self, name)}")
        need = self.expansion_um + self.compartment_um
        if self.halo_um < need:
            raise InvalidArgumentError(
                f"halo_um ({self.halo_um}) must cover expansion + compartment ({need}) um")

    def threshold(self, channel: str) -> float:
        """The positivity threshold of ``channel``."""
        return float(self.thresholds.get(channel, self.positive_threshold))
