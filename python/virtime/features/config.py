"""Settings of the per-slide features a translation computes (``features.parquet``)."""

from __future__ import annotations

from dataclasses import dataclass

from virtime.errors import InvalidArgumentError

__all__ = ["FeaturesConfig"]


@dataclass(frozen=True)
class FeaturesConfig:
    """As the keywords of :func:`virtime.features.features_from_outputs`.

    ``bin_um``: side of the spatial bins (microns); ``threshold``: probability above which a
    pixel is positive; ``max_failed_share``: failed-tile share of the tissue above which the
    slide is flagged (``qc_failed_share_exceeded``).
    """

    bin_um: float = 64.0
    threshold: float = 0.5
    max_failed_share: float = 0.05

    def __post_init__(self) -> None:
        if not self.bin_um > 0:
            raise InvalidArgumentError(f"bin_um must be positive, got {self.bin_um}")
        if not 0.0 <= self.threshold <= 1.0:
            raise InvalidArgumentError(f"threshold must be in [0, 1], got {self.threshold}")
        if not 0.0 <= self.max_failed_share <= 1.0:
            raise InvalidArgumentError(
                f"max_failed_share must be in [0, 1], got {self.max_failed_share}")

    def as_kwargs(self) -> dict[str, float]:
        """Keywords for :func:`~virtime.features.features_from_outputs`."""
        return {"bin_um": self.bin_um, "threshold": self.threshold,
                "max_failed_share": self.max_failed_share}
