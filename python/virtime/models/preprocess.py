"""Turning RGB tiles into model input, the one way every trainer and engine should do it."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from virtime.models.card import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["to_model_input"]


def to_model_input(
    rgb: np.ndarray | torch.Tensor,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """uint8 RGB ``(N, H, W, 3)`` or ``(H, W, 3)`` -> float32 ``(N, 3, H, W)``, mean/std normalized.

    GigaTIME expects ImageNet mean/std normalization of [0, 1] RGB.
    """
    x = torch.as_tensor(rgb, device=device)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected (N, H, W, 3) RGB, got shape {tuple(x.shape)}")
    x = x.permute(0, 3, 1, 2).float().div_(255.0)
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - m) / s
