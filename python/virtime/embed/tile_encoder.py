"""The Prov-GigaPath tile encoder: a ViT-g/16 with SwiGLU MLPs and layer scale (~1.13 B params).

Written here (timm is not a dependency) with timm's ``VisionTransformer`` parameter names so the
official ``pytorch_model.bin`` loads with ``strict=True``. Layout of the official checkpoint
(``vit_giant_patch14_dinov2`` with ``patch_size=16, img_size=224, mlp_ratio=5.33334``, no head)::

    cls_token (1,1,D)   pos_embed (1,1+196,D)   patch_embed.proj.{weight (D,3,16,16), bias}
    blocks.i.norm1.{weight,bias}  blocks.i.attn.qkv.{weight (3D,D), bias}
    blocks.i.attn.proj.{weight,bias}  blocks.i.ls1.gamma (D,)  blocks.i.norm2.{weight,bias}
    blocks.i.mlp.fc1.{weight (H,D), bias}  blocks.i.mlp.fc2.{weight (D,H/2), bias}  blocks.i.ls2.gamma
    norm.{weight,bias}

with ``H = int(D * mlp_ratio) = 8192``; the MLP is "packed" SwiGLU: ``fc2(silu(a) * b)`` where
``a, b`` are the two halves of ``fc1(x)``. The embedding is the final-normed class token.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "GIGAPATH_TILE_CONFIG",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "TileEmbeddingHead",
    "TileEncoder",
    "TileEncoderConfig",
    "tile_encoder_flops",
    "tile_encoder_param_count",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class TileEncoderConfig:
    """Architecture of the tile encoder; the defaults are the official Prov-GigaPath ones."""

    img_size: int = 224
    patch_size: int = 16
    in_chans: int = 3
    embed_dim: int = 1536
    depth: int = 40
    num_heads: int = 24
    #: Width of ``fc1``'s output (both SwiGLU halves): timm's ``int(1536 * 5.33334) = 8192``.
    mlp_hidden: int = 8192
    init_values: float = 1e-5
    eps: float = 1e-6

    @property
    def num_patches(self) -> int:
        return (self.img_size // self.patch_size) ** 2

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


#: The released Prov-GigaPath tile encoder.
GIGAPATH_TILE_CONFIG = TileEncoderConfig()


def tile_encoder_param_count(config: TileEncoderConfig = GIGAPATH_TILE_CONFIG) -> int:
    """Parameter count computed from the layout (1,134,953,984 for the official config)."""
    d, h, p = config.embed_dim, config.mlp_hidden, config.patch_size
    patch = d * config.in_chans * p * p + d
    tokens = d + (1 + config.num_patches) * d  # cls_token + pos_embed
    block = (
        2 * d  # norm1
        + 3 * d * d + 3 * d  # qkv
        + d * d + d  # proj
        + d  # ls1
        + 2 * d  # norm2
        + h * d + h  # fc1
        + (h // 2) * d + d  # fc2
        + d  # ls2
    )
    return patch + tokens + config.depth * block + 2 * d


def tile_encoder_flops(config: TileEncoderConfig = GIGAPATH_TILE_CONFIG) -> float:
    """Approximate forward FLOPs per tile (2 per multiply-add, matmuls only)."""
    n = 1 + config.num_patches
    d, h = config.embed_dim, config.mlp_hidden
    per_block = 2 * n * (3 * d * d + d * d + h * d + (h // 2) * d) + 2 * 2 * n * n * d
    patch = 2 * config.num_patches * d * config.in_chans * config.patch_size**2
    return float(patch + config.depth * per_block)


class _PatchEmbed(nn.Module):
    def __init__(self, cfg: TileEncoderConfig) -> None:
        super().__init__()
        self.proj = nn.Conv2d(cfg.in_chans, cfg.embed_dim, cfg.patch_size, stride=cfg.patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, N, D)


class _Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (B, heads, N, head_dim)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class _LayerScale(nn.Module):
    def __init__(self, dim: int, init_values: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_values)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class _SwiGLUPacked(nn.Module):
    """``fc2(silu(first half of fc1(x)) * second half)``: timm's ``SwiGLUPacked``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        if hidden % 2:
            raise ValueError(f"SwiGLU hidden width must be even, got {hidden}")
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden // 2, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.fc1(x).chunk(2, dim=-1)
        return self.fc2(F.silu(a) * b)


class _Block(nn.Module):
    def __init__(self, cfg: TileEncoderConfig) -> None:
        super().__init__()
        d = cfg.embed_dim
        self.norm1 = nn.LayerNorm(d, eps=cfg.eps)
        self.attn = _Attention(d, cfg.num_heads)
        self.ls1 = _LayerScale(d, cfg.init_values)
        self.norm2 = nn.LayerNorm(d, eps=cfg.eps)
        self.mlp = _SwiGLUPacked(d, cfg.mlp_hidden)
        self.ls2 = _LayerScale(d, cfg.init_values)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class TileEncoder(nn.Module):
    """Tiles ``(N, 3, 224, 224)`` (ImageNet-normalized) to embeddings ``(N, embed_dim)``.

    Build on the ``meta`` device (``with torch.device("meta"): TileEncoder()``) to inspect the
    full 1.1 B-parameter layout without allocating it.
    """

    def __init__(self, config: TileEncoderConfig = GIGAPATH_TILE_CONFIG) -> None:
        super().__init__()
        self.config = config
        d = config.embed_dim
        self.patch_embed = _PatchEmbed(config)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + config.num_patches, d))
        self.blocks = nn.ModuleList(_Block(config) for _ in range(config.depth))
        self.norm = nn.LayerNorm(d, eps=config.eps)
        self._init_weights()

    @property
    def embed_dim(self) -> int:
        return self.config.embed_dim

    def _init_weights(self) -> None:
        if self.cls_token.device.type == "meta":
            return
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        w = self.patch_embed.proj.weight
        nn.init.uniform_(w, -1 / math.sqrt(w[0].numel()), 1 / math.sqrt(w[0].numel()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = self.config.img_size
        if not torch.jit.is_tracing() and tuple(x.shape[1:]) != (self.config.in_chans, size, size):
            raise ValueError(
                f"tile encoder expects (N, {self.config.in_chans}, {size}, {size}), "
                f"got {tuple(x.shape)}"
            )
        x = self.patch_embed(x)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.norm(x)[:, 0]


class TileEmbeddingHead(nn.Module):
    """The encoder seen through the engine protocol: ``(N,3,S,S) -> (N, D, 1, 1)``.

    The engines (torch, ONNX Runtime, TensorRT) speak 4-D outputs; an embedding is a 1x1 map.
    """

    def __init__(self, encoder: TileEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)[:, :, None, None]
