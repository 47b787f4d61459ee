"""The GigaTIME translator: a UNet++ ("nested U-Net") with VGG blocks.

Parameter names follow the official checkpoint (``conv{i}_{j}.conv1/bn1/conv2/bn2.*`` and
``final.*``) so that the official ``model.pth`` state dict loads with ``strict=True``. The width is
configurable through ``filters`` so that a reduced-width demo model can share the same code.

Node (i, j) of the nested grid: for ``j == 0`` it reads ``pool(x[i-1, 0])`` (the image for i = 0);
for ``j >= 1`` it reads ``cat(x[i, 0..j-1], up(x[i+1, j-1]))``. Middle and output channels of node
(i, j) are ``filters[i]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["GIGATIME_FILTERS", "GigaTIME", "VGGBlock", "node_names"]

#: Widths of the five resolution levels of the official GigaTIME model.
GIGATIME_FILTERS: tuple[int, ...] = (32, 64, 128, 256, 512)


class VGGBlock(nn.Module):
    """conv3x3-BN-ReLU twice: the node of the nested grid."""

    def __init__(self, in_channels: int, middle_channels: int, out_channels: int) -> None:
        super().__init__()
        self.relu = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_channels, middle_channels, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(middle_channels)
        self.conv2 = nn.Conv2d(middle_channels, out_channels, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(x)))


def node_names(depth: int = 5) -> list[tuple[int, int]]:
    """The (i, j) nodes of a nested U-Net of ``depth`` levels, in evaluation order."""
    nodes = []
    for i in range(depth):  # diagonal order: x[i,0] first, then everything it unlocks
        nodes.append((i, 0))
        for j in range(1, i + 1):
            nodes.append((i - j, j))
    return nodes


class GigaTIME(nn.Module):
    """UNet++ mapping ImageNet-normalized RGB to per-pixel logits of the 23 GigaTIME channels.

    Parameters
    ----------
    in_channels, num_classes
        3 and 23 for GigaTIME.
    filters
        Widths of the five levels; ``(32, 64, 128, 256, 512)`` is the official model
        (9.16 M parameters, 69 GFLOP per 256x256 window).
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 23,
        filters: Sequence[int] = GIGATIME_FILTERS,
    ) -> None:
        super().__init__()
        filters = tuple(int(f) for f in filters)
        if len(filters) < 2 or any(f <= 0 for f in filters):
            raise ValueError(f"filters must be >= 2 positive widths, got {filters}")
        self.filters = filters
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.depth = len(filters)
        self.pool = nn.MaxPool2d(2, 2)
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
        # Registered column by column (j, then i), the order of the official state dict.
        for i, j in sorted(node_names(self.depth), key=lambda n: (n[1], n[0])):
            if j == 0:
                cin = in_channels if i == 0 else filters[i - 1]
            else:
                cin = filters[i] * j + filters[i + 1]
            setattr(self, f"conv{i}_{j}", VGGBlock(cin, filters[i], filters[i]))
        self.final = nn.Conv2d(filters[0], num_classes, kernel_size=1)

    @property
    def config(self) -> dict:
        """Constructor arguments, stored in model cards."""
        return {
            "in_channels": self.in_channels,
            "num_classes": self.num_classes,
            "filters": list(self.filters),
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, num_classes, H, W)``; H and W must be multiples of 2**(depth-1)."""
        feats: dict[tuple[int, int], torch.Tensor] = {}
        for i, j in node_names(self.depth):
            block = getattr(self, f"conv{i}_{j}")
            if j == 0:
                inp = x if i == 0 else self.pool(feats[(i - 1, 0)])
            else:
                parts = [feats[(i, k)] for k in range(j)]
                parts.append(self.up(feats[(i + 1, j - 1)]))
                inp = torch.cat(parts, dim=1)
            feats[(i, j)] = block(inp)
        return self.final(feats[(0, self.depth - 1)])
