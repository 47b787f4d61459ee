"""GigaTIME-Flash: a DINOv2-style ViT-S/16 encoder with LoRA and a 4-stage convolutional decoder.

Encoder parameter names follow timm's ``VisionTransformer`` (``patch_embed.proj``, ``cls_token``,
``pos_embed``, ``blocks.N.norm1``, ``attn.qkv``, ``attn.proj``, ``ls1.gamma``, ``norm2``, ``mlp``,
``ls2.gamma``, ``norm``). The SwiGLU MLP uses timm's packed layout (``SwiGLUPacked``):
``mlp.fc1`` maps dim -> 2*hidden (value half first, gate applied as ``silu(first) * second``) and
``mlp.fc2`` maps hidden -> dim. DINOv2's own names ``mlp.w12`` / ``mlp.w3`` hold the same tensors
and are renamed on load.

Decoder (our layout; the official Flash decoder's names are not published with the paper, so its
keys are reported as unmatched rather than guessed): the token grids after blocks 3, 6, 9 and 12
(16x16 for a 256 window) are the deepest feature and three skips; four stages upsample x2 and fuse
``cat(up(x), skip)`` through conv3x3-BN-ReLU twice, with widths 384 -> 192 -> 96 -> 48 -> 24; the
last skip is a small full-resolution conv stem on the image; a 1x1 conv gives the 23 logits.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from virtime.models.gigatime import VGGBlock
from virtime.models.lora import LoRALinear

__all__ = ["GigaTIMEFlash", "remap_flash_keys", "load_flash_state_dict"]

logger = logging.getLogger(__name__)


class PatchEmbed(nn.Module):
    """Non-overlapping patch x patch convolution to tokens."""

    def __init__(self, patch: int, in_channels: int, dim: int) -> None:
        super().__init__()
        self.patch = patch
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class LayerScale(nn.Module):
    """Per-channel residual scale (DINOv2), parameter ``gamma``."""

    def __init__(self, dim: int, init: float = 1e-5) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Attention(nn.Module):
    """Multi-head self-attention with LoRA on ``qkv`` and ``proj``."""

    def __init__(self, dim: int, heads: int, r: int, alpha: float) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = LoRALinear(dim, 3 * dim, r=r, alpha=alpha)
        self.proj = LoRALinear(dim, dim, r=r, alpha=alpha)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        qkv = self.qkv(x).reshape(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(out.transpose(1, 2).reshape(n, t, d))


class SwiGLUPacked(nn.Module):
    """SwiGLU MLP in timm's packed layout: ``fc2(silu(a) * b)`` with ``a, b = fc1(x).chunk(2)``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, 2 * hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.fc1(x).chunk(2, dim=-1)
        return self.fc2(F.silu(a) * b)


class Block(nn.Module):
    """Pre-norm transformer block with layer scale."""

    def __init__(self, dim: int, heads: int, hidden: int, r: int, alpha: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads, r, alpha)
        self.ls1 = LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = SwiGLUPacked(dim, hidden)
        self.ls2 = LayerScale(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class ViTEncoder(nn.Module):
    """ViT with a class token and learned position embeddings for ``img_size`` inputs."""

    def __init__(
        self, img_size: int, patch: int, in_channels: int, dim: int, depth: int, heads: int,
        hidden: int, r: int, alpha: float,
    ) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed(patch, in_channels, dim)
        self.grid = img_size // patch
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, self.grid * self.grid + 1, dim) * 0.02)
        self.blocks = nn.ModuleList(Block(dim, heads, hidden, r, alpha) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def _pos(self, gh: int, gw: int) -> torch.Tensor:
        if gh == self.grid and gw == self.grid:
            return self.pos_embed
        cls, grid = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        grid = grid.reshape(1, self.grid, self.grid, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(gh, gw), mode="bicubic", align_corners=False)
        return torch.cat([cls, grid.flatten(2).transpose(1, 2)], dim=1)

    def forward(self, x: torch.Tensor, take: Sequence[int]) -> list[torch.Tensor]:
        """Token grids ``(N, dim, H/p, W/p)`` after the blocks in ``take`` (last one normed)."""
        n, _, h, w = x.shape
        gh, gw = h // self.patch_embed.patch, w // self.patch_embed.patch
        tokens = self.patch_embed(x)
        tokens = torch.cat([self.cls_token.expand(n, -1, -1), tokens], dim=1) + self._pos(gh, gw)
        out = []
        last = len(self.blocks) - 1
        for k, block in enumerate(self.blocks):
            tokens = block(tokens)
            if k in take:
                t = self.norm(tokens) if k == last else tokens
                out.append(t[:, 1:].transpose(1, 2).reshape(n, -1, gh, gw))
        return out


class GigaTIMEFlash(nn.Module):
    """ViT-S/16 + LoRA encoder and convolutional decoder to per-pixel logits (see module doc)."""

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 23,
        img_size: int = 256,
        patch: int = 16,
        dim: int = 384,
        depth: int = 12,
        heads: int = 6,
        mlp_hidden: int = 1024,
        lora_r: int = 8,
        lora_alpha: float = 16.0,
        decoder: Sequence[int] = (192, 96, 48, 24),
        stem: int = 16,
        take: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if patch != 2 ** len(decoder):
            raise ValueError(f"patch {patch} must equal 2**len(decoder) = {2 ** len(decoder)}")
        self._config = dict(
            in_channels=in_channels, num_classes=num_classes, img_size=img_size, patch=patch,
            dim=dim, depth=depth, heads=heads, mlp_hidden=mlp_hidden, lora_r=lora_r,
            lora_alpha=lora_alpha, decoder=list(decoder), stem=stem,
        )
        self.take = tuple(take) if take is not None else tuple(
            round(depth * (k + 1) / 4) - 1 for k in range(4)
        )
        self._config["take"] = list(self.take)
        self.encoder = ViTEncoder(
            img_size, patch, in_channels, dim, depth, heads, mlp_hidden, lora_r, lora_alpha
        )
        self.stem = VGGBlock(in_channels, stem, stem)
        widths = [dim, *decoder]
        skip_widths = [w // 2 for w in decoder[:-1]] + [stem]
        self.skips = nn.ModuleList(nn.Conv2d(dim, s, 1) for s in skip_widths[:-1])
        self.stages = nn.ModuleList(
            VGGBlock(widths[k] + skip_widths[k], widths[k + 1], widths[k + 1])
            for k in range(len(decoder))
        )
        self.head = nn.Conv2d(decoder[-1], num_classes, 1)
        self.num_classes = num_classes

    @property
    def config(self) -> dict:
        """Constructor arguments, stored in model cards."""
        return dict(self._config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.encoder(x, self.take)  # shallow ... deep, all at 1/patch
        y = feats[-1]
        skips = list(reversed(feats[:-1]))
        for k, stage in enumerate(self.stages):
            y = F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False)
            if k < len(self.skips):
                s = F.interpolate(self.skips[k](skips[k]), size=y.shape[-2:], mode="bilinear",
                                  align_corners=False)
            else:
                s = self.stem(x)
            y = stage(torch.cat([y, s], dim=1))
        return self.head(y)


_PREFIXES = ("module.", "model.")


def remap_flash_keys(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official / PEFT / DINOv2 key layouts mapped onto :class:`GigaTIMEFlash` names.

    Handles a ``module.`` (DataParallel) prefix, PEFT's ``encoder.base_model.model.`` prefix and
    ``.base_layer.`` / ``.lora_A.default.`` infixes, and DINOv2's ``mlp.w12`` / ``mlp.w3``.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        k = key
        while k.startswith(_PREFIXES):
            k = k.split(".", 1)[1]
        k = k.replace("encoder.base_model.model.", "encoder.")
        k = k.replace(".base_layer.", ".")
        k = re.sub(r"\.(lora_[AB])\.default\.", r".\1.", k)
        k = k.replace(".mlp.w12.", ".mlp.fc1.").replace(".mlp.w3.", ".mlp.fc2.")
        out[k] = value
    return out


def load_flash_state_dict(
    model: GigaTIMEFlash, state: Mapping[str, torch.Tensor], *, strict: bool = True
) -> tuple[list[str], list[str]]:
    """Loads ``state`` after :func:`remap_flash_keys`; returns (missing, unexpected) keys.

    With ``strict`` any unmatched key raises :class:`virtime.errors.CheckpointError` naming them;
    otherwise they are logged as a warning, never dropped silently.
    """
    from virtime.errors import CheckpointError

    remapped = remap_flash_keys(state)
    own = model.state_dict()
    missing = sorted(set(own) - set(remapped))
    unexpected = sorted(set(remapped) - set(own))
    bad_shape = sorted(
        k for k in set(own) & set(remapped) if tuple(own[k].shape) != tuple(remapped[k].shape)
    )
    if strict and (missing or unexpected or bad_shape):
        raise CheckpointError(_describe(missing, unexpected, bad_shape))
    if missing or unexpected or bad_shape:
        logger.warning("GigaTIME-Flash weights partly unmatched: %s",
                       _describe(missing, unexpected, bad_shape))
    usable = {k: v for k, v in remapped.items() if k in own and k not in bad_shape}
    model.load_state_dict(usable, strict=False)
    return missing, unexpected


def _describe(missing: list[str], unexpected: list[str], bad_shape: list[str]) -> str:
    def few(keys: list[str]) -> str:
        return ", ".join(keys[:8]) + (f" (+{len(keys) - 8} more)" if len(keys) > 8 else "")

    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys: {few(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys: {few(unexpected)}")
    if bad_shape:
        parts.append(f"{len(bad_shape)} keys with wrong shapes: {few(bad_shape)}")
    return "; ".join(parts)
