"""Low-rank adaptation (LoRA) of a linear layer, as used by GigaTIME-Flash on its ViT encoder.

``LoRALinear`` *is* an ``nn.Linear`` (its frozen base weight keeps the plain names ``weight`` and
``bias``) plus two bias-free factors ``lora_A`` (in -> r) and ``lora_B`` (r -> out); the output is
``base(x) + (alpha / r) * lora_B(lora_A(x))``. PEFT stores the same tensors as
``<layer>.base_layer.weight`` and ``<layer>.lora_A.default.weight``; the loader in
:mod:`virtime.models.flash` maps those names onto these.

For inference the adapter is folded into the base weight (:func:`merge_lora`, used by the ONNX
export): one matrix product instead of three, and for INT8 one quantized weight instead of a
rank-8 side path quantized on its own. On GigaTIME-Flash's OpenVINO INT8 model that was
1.07-1.2x the windows/s of the unmerged graph (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LoRALinear", "has_lora", "merge_lora"]


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


def has_lora(module: nn.Module) -> bool:
    """Whether ``module`` contains a :class:`LoRALinear`."""
    return any(isinstance(m, LoRALinear) for m in module.modules())


def merge_lora(module: nn.Module) -> int:
    """Replace, in place, every :class:`LoRALinear` inside ``module`` by a plain ``nn.Linear``
    with the merged weight ``W + scale * B @ A`` (same bias); returns how many were merged.

    The output is the same up to float rounding. Meant for a copy that is exported or run for
    inference only: the merged layers can no longer be trained as adapters.
    """
    merged = 0
    for name, child in list(module.named_children()):
        if isinstance(child, LoRALinear):
            plain = nn.Linear(child.in_features, child.out_features, bias=child.bias is not None,
                              device=child.weight.device, dtype=child.weight.dtype)
            with torch.no_grad():
                plain.weight.copy_(child.merged_weight())
                if child.bias is not None:
                    plain.bias.copy_(child.bias)
            plain.train(child.training)
            setattr(module, name, plain)
            merged += 1
        else:
            merged += merge_lora(child)
    return merged
