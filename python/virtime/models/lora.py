"""Low-rank adaptation (LoRA) of a linear layer, as used by GigaTIME-Flash on its ViT encoder.

``LoRALinear`` *is* an ``nn.Linear`` (its frozen base weight keeps the plain names ``weight`` and
``bias``) plus two bias-free factors ``lora_A`` (in -> r) and ``lora_B`` (r -> out); the output is
``base(x) + (alpha / r) * lora_B(lora_A(x))``. PEFT stores the same tensors as
``<layer>.base_layer.weight`` and ``<layer>.lora_A.default.weight``; the loader in
:mod:`virtime.models.flash` maps those names onto these.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LoRALinear"]


class LoRALinear(nn.Linear):
    """A linear layer with a trainable low-rank update (rank ``r``, scale ``alpha / r``).

    ``lora_B`` starts at zero so that a freshly wrapped layer computes exactly its base layer.
    """

    def __init__(
        self, in_features: int, out_features: int, bias: bool = True, *, r: int = 8,
        alpha: float = 16.0,
    ) -> None:
        super().__init__(in_features, out_features, bias=bias)
        if r <= 0:
            raise ValueError(f"LoRA rank must be positive, got {r}")
        self.r = int(r)
        self.alpha = float(alpha)
        self.scaling = self.alpha / self.r
        self.lora_A = nn.Linear(in_features, self.r, bias=False)
        self.lora_B = nn.Linear(self.r, out_features, bias=False)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias) + self.scaling * self.lora_B(self.lora_A(x))

    def merged_weight(self) -> torch.Tensor:
        """``W + scale * B @ A``: the single matrix an exported model may use instead."""
        return self.weight + self.scaling * (self.lora_B.weight @ self.lora_A.weight)
