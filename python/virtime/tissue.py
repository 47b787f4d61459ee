"""Tissue detection on a low-resolution view of the slide (C++ core).

Otsu thresholds on saturation and on grey level, clamped so that glass never counts as tissue and
a slide covered in tissue is not split in two; a small opening and closing; holes filled and
specks dropped by physical area. A uniform image (blank glass, a uniformly dark or coloured slide)
has no grey-level spread and yields no tissue.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from virtime import _core
from virtime.slide import Slide

__all__ = ["TissueConfig", "TissueMask", "detect_tissue", "detect_tissue_image"]


@dataclass(frozen=True)
class TissueConfig:
    """Parameters of tissue detection (defaults suit H&E at 8-16 um/px)."""

    target_mpp: float = 12.0
    min_saturation: float = 0.07
    max_grey: float = 235.0
    min_grey: float = 25.0
    min_contrast: float = 0.04
    open_radius: int = 1
    close_radius: int = 2
    min_component_um2: float = 10_000.0
    max_hole_um2: float = 40_000.0

    def _to_core(self) -> _core.TissueParams:
        params = _core.TissueParams()
        for key, value in asdict(self).items():
            setattr(params, key, value)
        return params


#: The C++ result itself: ``mask`` ((h, w) bool, a view of the core's buffer), ``downsample``
#: (level-0 pixels per mask pixel), ``mpp``, ``saturation_threshold``, ``grey_threshold`` and
#: ``fraction`` (share of the slide area that is tissue), all read-only.
TissueMask = _core.TissueMask


def detect_tissue(slide: Slide, config: TissueConfig = TissueConfig()) -> TissueMask:
    """Tissue mask of a slide, computed on the level nearest ``config.target_mpp``."""
    return _core.detect_tissue(slide._core, slide.mpp, config._to_core())


def detect_tissue_image(
    rgb: np.ndarray, mpp: float, config: TissueConfig = TissueConfig()
) -> TissueMask:
    """Tissue mask of an RGB uint8 image already at low resolution (``mpp`` um/px)."""
    return _core.detect_tissue_rgb(np.ascontiguousarray(rgb, dtype=np.uint8), float(mpp),
                                   config._to_core())
