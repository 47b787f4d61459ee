"""Training a translator on paired H&E / mIF tiles with the GigaTIME loss (BCE + soft Dice)."""

from __future__ import annotations

from virtime.training.losses import coarsen_targets, gigatime_loss, soft_dice
from virtime.training.train import TrainConfig, TrainResult, stain_jitter, train

__all__ = [
    "TrainConfig",
    "TrainResult",
    "coarsen_targets",
    "gigatime_loss",
    "soft_dice",
    "stain_jitter",
    "train",
]
