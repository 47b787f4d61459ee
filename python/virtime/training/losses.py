"""The GigaTIME training objective.

Targets are coarsened to tolerate H&E/mIF registration error: bilinear down-sampling by 1/8 then
bilinear up-sampling back to full size (``align_corners=False``), giving soft labels in [0, 1].
The loss is ``0.5 * BCE-with-logits(logits, soft) + (1 - soft Dice)``, where soft Dice is
``(2 * sum(p * t) + 1) / (sum(p) + sum(t) + 1)`` per channel over the batch and pixels
(p = sigmoid(logits)), averaged over channels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["coarsen_targets", "soft_dice", "gigatime_loss"]


def coarsen_targets(targets: torch.Tensor, factor: int = 8) -> torch.Tensor:
    """Bilinear 1/``factor`` then back up to the input size: ``(N, C, H, W)`` float soft labels."""
    t = targets.float()
    h, w = t.shape[-2:]
    small = F.interpolate(t, size=(max(1, h // factor), max(1, w // factor)), mode="bilinear",
                          align_corners=False)
    return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)


def soft_dice(probs: torch.Tensor, targets: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Mean over channels of the soft Dice coefficient (sums over batch and pixels)."""
    dims = (0, 2, 3)
    inter = (probs * targets).sum(dims)
    denom = probs.sum(dims) + targets.sum(dims)
    return ((2 * inter + smooth) / (denom + smooth)).mean()


def gigatime_loss(
    logits: torch.Tensor, targets: torch.Tensor, *, factor: int = 8, coarsen: bool = True
) -> tuple[torch.Tensor, dict[str, float]]:
    """``0.5 * BCE + (1 - soft Dice)`` against coarsened targets; returns (loss, parts)."""
    soft = coarsen_targets(targets, factor) if coarsen else targets.float()
    logits = logits.float()
    bce = F.binary_cross_entropy_with_logits(logits, soft)
    dice = soft_dice(torch.sigmoid(logits), soft)
    loss = 0.5 * bce + (1.0 - dice)
    return loss, {"bce": float(bce.detach()), "dice": float(dice.detach())}
