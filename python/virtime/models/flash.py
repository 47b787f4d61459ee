"""GigaTIME-Flash: the published architecture (ViT-S/16 + LoRA encoder, additive-skip conv decoder).

What the model computes (re-implemented from the description of the official ``GigaTIMEFlash``;
timm and peft are not needed):

* **Encoder**: timm's ``VisionTransformer`` as configured for DINOv2-small with 16-px patches:
  384 dims, 12 blocks, 6 heads (head dim 64), a class token, no register tokens, LayerNorm
  eps 1e-6, LayerScale (``ls1.gamma`` / ``ls2.gamma``), and the packed SwiGLU MLP (timm's
  ``SwiGLUPacked``: ``mlp.fc1`` maps 384 -> 2048 = 2 x 1024, ``silu(first half) * second half``,
  ``mlp.fc2`` maps 1024 -> 384; ``mlp_ratio = 2 x 2.66667`` gives ``int(384 x 5.33334) = 2048``).
  The position table is the 224-px one (14 x 14 grid + class slot); for a window of 16 x 16
  patches its grid is resized bicubically (``align_corners=False``) and added to the patch tokens
  only (the class token is never prepended). ``patch_drop`` and ``norm_pre`` are identities and
  the final ``norm`` is not applied: the decoder reads the raw token grids after blocks
  3, 5, 8 and 11 (0-based).
* **LoRA** r=8, alpha=16 (scale 2) on every ``attn.qkv`` and ``attn.proj`` linear layer
  (:class:`virtime.models.lora.LoRALinear`; dropout is inert at inference).
* **Decoder**: ``decoder4`` (384 -> 192), ``decoder3`` (192 -> 96), ``decoder2`` (96 -> 48),
  ``decoder1`` (48 -> 24), each conv3x3-ReLU, conv3x3-ReLU, then x2 bilinear up-sampling with
  aligned corners (``nn.Sequential`` indices 0 and 2 hold the convolutions). The shallower grids
  enter through ``skip3`` (one), ``skip2`` (two) and ``skip1`` (three) stride-2 2x2 transposed
  convolutions and are **added** to the input of decoder3, decoder2 and decoder1; a 1x1
  ``final_conv`` gives the 23 logits, bilinearly resized (aligned corners) to 256 x 256 if the
  output has another width.

Parameter names are those of the official module without peft's wrappers (``encoder.blocks.N.
attn.qkv.weight`` for peft's ``encoder.base_model.model.blocks.N.attn.qkv.base_layer.weight``);
:func:`canonical_key` / :func:`official_key` translate. For a fixed window the resized position
grid is a constant: it is kept in the non-persistent buffer ``encoder.pos_grid``, recomputed on
every ``eval()``, after ``load_state_dict`` and by :meth:`GigaTIMEFlash.fold_position_embedding`,
and used in eval mode, so an exported graph holds it as a constant instead of a bicubic resize.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from virtime.models.lora import LoRALinear

__all__ = [
    "FLASH_DECODER",
    "FLASH_TAKE",
    "FlashLoadReport",
    "GigaTIMEFlash",
    "canonical_key",
    "flash_config_from_state",
    "is_flash_state",
    "load_flash_state_dict",
    "official_key",
    "remap_flash_keys",
]

logger = logging.getLogger(__name__)

#: Decoder widths of the official model (decoder4 ... decoder1).
FLASH_DECODER: tuple[int, int, int, int] = (192, 96, 48, 24)
#: Blocks (0-based) whose token grids feed skip1, skip2, skip3 and decoder4.
FLASH_TAKE: tuple[int, int, int, int] = (3, 5, 8, 11)
#: Output width the official forward resizes to when the decoder's differs.
FLASH_OUTPUT = 256

LN_EPS = 1e-6


def _linear(in_features: int, out_features: int, r: int, alpha: float) -> nn.Linear:
    if r > 0:
        return LoRALinear(in_features, out_features, r=r, alpha=alpha)
    return nn.Linear(in_features, out_features)


class PatchEmbed(nn.Module):
    """``patch x patch`` stride-``patch`` convolution, flattened to ``(N, tokens, dim)``."""

    def __init__(self, patch: int, in_channels: int, dim: int) -> None:
        super().__init__()
        self.patch = patch
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class LayerScale(nn.Module):
    """Per-channel residual scale, parameter ``gamma``."""

    def __init__(self, dim: int, init: float = 1e-5) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Attention(nn.Module):
    """Multi-head self-attention (softmax scale head_dim**-0.5), LoRA on ``qkv`` and ``proj``."""

    def __init__(self, dim: int, heads: int, r: int, alpha: float) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = _linear(dim, 3 * dim, r, alpha)
        self.proj = _linear(dim, dim, r, alpha)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        qkv = self.qkv(x).reshape(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(out.transpose(1, 2).reshape(n, t, d))


class SwiGLUPacked(nn.Module):
    """``fc2(silu(a) * b)`` with ``a, b = fc1(x).chunk(2)`` (gate on the first half)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, 2 * hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.fc1(x).chunk(2, dim=-1)
        return self.fc2(F.silu(a) * b)


class Block(nn.Module):
    """Pre-norm transformer block with layer scale on both residual branches."""

    def __init__(self, dim: int, heads: int, hidden: int, r: int, alpha: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = Attention(dim, heads, r, alpha)
        self.ls1 = LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = SwiGLUPacked(dim, hidden)
        self.ls2 = LayerScale(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class ViTEncoder(nn.Module):
    """Patch tokens + resized position grid through the blocks; token grids of chosen blocks.

    ``cls_token`` and ``norm`` exist so the weights match the official module one to one; the
    Flash forward uses neither.
    """

    def __init__(self, img_size: int, window: int, patch: int, in_channels: int, dim: int,
                 depth: int, heads: int, hidden: int, r: int, alpha: float) -> None:
        super().__init__()
        self.patch = patch
        self.grid = img_size // patch  # the position table's own grid (14 for 224 px)
        self.patch_embed = PatchEmbed(patch, in_channels, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, self.grid * self.grid + 1, dim) * 0.02)
        self.blocks = nn.ModuleList(Block(dim, heads, hidden, r, alpha) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=LN_EPS)
        self.folded: tuple[int, int] = (0, 0)
        self.register_buffer("pos_grid", torch.zeros(0), persistent=False)
        self.fold(window // patch, window // patch)

    def resize_pos(self, gh: int, gw: int, table: torch.Tensor | None = None) -> torch.Tensor:
        """Position grid for ``gh x gw`` patches, ``(1, gh*gw, dim)``: bicubic, class slot dropped."""
        table = (self.pos_embed if table is None else table)[:, 1:]
        grid = table.reshape(1, self.grid, self.grid, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(gh, gw), mode="bicubic", align_corners=False)
        return grid.permute(0, 2, 3, 1).reshape(1, gh * gw, -1)

    def fold(self, gh: int, gw: int) -> None:
        """Stores the resized grid for ``gh x gw`` patches as the constant ``pos_grid``."""
        with torch.no_grad(), torch.inference_mode(False):  # in float32 whatever the dtype
            grid = self.resize_pos(gh, gw, self.pos_embed.detach().float())
            self.pos_grid = grid.to(self.pos_embed.dtype).clone()
        self.folded = (gh, gw)

    def forward(self, x: torch.Tensor, take: Sequence[int]) -> list[torch.Tensor]:
        """Token grids ``(N, dim, H/patch, W/patch)`` after the blocks in ``take``."""
        n = x.shape[0]
        gh, gw = x.shape[2] // self.patch, x.shape[3] // self.patch
        tokens = self.patch_embed(x)
        # While tracing for export the window is the folded one (export_onnx folds it first)
        # and traced sizes must not be compared in Python.
        if not self.training and (_tracing() or (gh, gw) == self.folded):
            pos = self.pos_grid
        else:
            pos = self.resize_pos(gh, gw)
        tokens = tokens + pos
        out = []
        for k, block in enumerate(self.blocks):
            tokens = block(tokens)
            if k in take:
                out.append(tokens.transpose(1, 2).reshape(n, -1, gh, gw))
        return out


def _decoder_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
    )


def _skip_block(cin: int, cout: int, times: int) -> nn.Sequential:
    layers = []
    for _ in range(times):
        layers.append(nn.ConvTranspose2d(cin, cout, kernel_size=2, stride=2))
        cin = cout
    return nn.Sequential(*layers)


class GigaTIMEFlash(nn.Module):
    """The official GigaTIME-Flash translator (see module docstring); defaults are its widths.

    Parameters
    ----------
    img_size
        Image size of the position table (224: a 14 x 14 grid + class slot).
    window
        The inference window whose resized position grid is kept as a constant (256).
    dim, depth, heads, mlp_hidden
        ViT width, blocks, heads and SwiGLU hidden width (fc1 is ``2 * mlp_hidden`` wide).
    lora_r, lora_alpha
        LoRA rank and alpha on ``qkv``/``proj``; ``lora_r=0`` gives plain linear layers.
    decoder
        Widths of decoder4 ... decoder1 (skip3, skip2, skip1 match the first three).
    take
        The four blocks (0-based) feeding skip1, skip2, skip3 and decoder4.
    output_size
        Logits are resized to this width when the decoder's differs (256); ``None``: never.
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 23,
        img_size: int = 224,
        window: int = 256,
        patch: int = 16,
        dim: int = 384,
        depth: int = 12,
        heads: int = 6,
        mlp_hidden: int = 1024,
        lora_r: int = 8,
        lora_alpha: float = 16.0,
        decoder: Sequence[int] = FLASH_DECODER,
        take: Sequence[int] = FLASH_TAKE,
        output_size: int | None = FLASH_OUTPUT,
    ) -> None:
        super().__init__()
        decoder = tuple(int(w) for w in decoder)
        take = tuple(int(k) for k in take)
        if len(decoder) != 4 or min(decoder) <= 0:
            raise ValueError(f"decoder needs 4 positive widths (decoder4..decoder1), got {decoder}")
        if len(take) != 4 or sorted(set(take)) != list(take) or take[0] < 0 or take[-1] >= depth:
            raise ValueError(f"take needs 4 increasing block indices below depth {depth}, got {take}")
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        if img_size % patch or window % patch:
            raise ValueError(f"img_size {img_size} and window {window} must be multiples of {patch}")
        self._config: dict[str, Any] = {
            "in_channels": in_channels, "num_classes": num_classes, "img_size": img_size,
            "window": window, "patch": patch, "dim": dim, "depth": depth, "heads": heads,
            "mlp_hidden": mlp_hidden, "lora_r": lora_r, "lora_alpha": float(lora_alpha),
            "decoder": list(decoder), "take": list(take), "output_size": output_size,
        }
        self.take = take
        self.num_classes = num_classes
        self.output_size = output_size
        self.encoder = ViTEncoder(img_size, window, patch, in_channels, dim, depth, heads,
                                  mlp_hidden, lora_r, float(lora_alpha))
        d4, d3, d2, d1 = decoder
        self.decoder4 = _decoder_block(dim, d4)
        self.decoder3 = _decoder_block(d4, d3)
        self.decoder2 = _decoder_block(d3, d2)
        self.decoder1 = _decoder_block(d2, d1)
        self.skip1 = _skip_block(dim, d2, 3)
        self.skip2 = _skip_block(dim, d3, 2)
        self.skip3 = _skip_block(dim, d4, 1)
        self.final_conv = nn.Conv2d(d1, num_classes, kernel_size=1)
        self.register_load_state_dict_post_hook(_refold_after_load)

    @property
    def config(self) -> dict:
        """Constructor arguments, stored in model cards."""
        return dict(self._config)

    def fold_position_embedding(self, window: int | None = None) -> None:
        """Keep the position grid for ``window`` (default: the configured one) as a constant."""
        window = int(window or self._config["window"])
        if window % self.encoder.patch:
            raise ValueError(f"window {window} is not a multiple of the patch {self.encoder.patch}")
        self.encoder.fold(window // self.encoder.patch, window // self.encoder.patch)

    def train(self, mode: bool = True) -> GigaTIMEFlash:
        super().train(mode)
        if not mode:  # weights may have changed since the last fold
            self.encoder.fold(*self.encoder.folded)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, num_classes, H, W)`` for ImageNet-normalized RGB ``(N, 3, H, W)``."""
        f1, f2, f3, f4 = self.encoder(x, self.take)
        y = self.decoder4(f4)
        y = self.decoder3(y + self.skip3(f3))
        y = self.decoder2(y + self.skip2(f2))
        y = self.decoder1(y + self.skip1(f1))
        y = self.final_conv(y)
        width = self.encoder.folded[1] * 16 if _tracing() else y.shape[-1]
        if self.output_size is not None and width != self.output_size:
            y = F.interpolate(y, size=(self.output_size, self.output_size), mode="bilinear",
                              align_corners=True)
        return y


def _tracing() -> bool:
    return bool(torch.jit.is_tracing() or torch.onnx.is_in_onnx_export())


def _refold_after_load(module: nn.Module, incompatible: Any) -> None:
    enc = module.encoder  # type: ignore[union-attr]
    enc.fold(*enc.folded)


# --------------------------------------------------------------------------- checkpoint layouts

_PEFT_ENCODER = "encoder.base_model.model."
_LORA_LAYERS = ("attn.qkv", "attn.proj")
#: Tensors of timm variants the Flash forward never reads; loaded nowhere, listed in the report.
_IGNORABLE = re.compile(r"^encoder\.(head|fc_norm)\.(weight|bias)$")


def canonical_key(key: str) -> str:
    """A checkpoint key in virtime's names: no ``module.`` prefixes, no peft wrapper names.

    Accepts what the official notebook's loader accepts: ``module.`` (DataParallel) prefixes,
    peft's ``encoder.base_model.model.`` encoder prefix and ``.base_layer.`` infix (and its
    ``lora_A.default`` / ``lora_B.default`` adapter names), or a plain ``encoder.`` prefix.
    """
    k = key
    while k.startswith("module."):
        k = k[len("module."):]
    if k.startswith(_PEFT_ENCODER):
        k = "encoder." + k[len(_PEFT_ENCODER):]
    k = k.replace(".base_layer.", ".")
    return re.sub(r"\.(lora_[AB])\.default\.", r".\1.", k)


def official_key(key: str) -> str:
    """virtime's name -> the official (peft) name, e.g. ``...qkv.weight`` -> ``...qkv.base_layer.weight``."""
    if not key.startswith("encoder."):
        return key
    k = _PEFT_ENCODER + key[len("encoder."):]
    for layer in _LORA_LAYERS:
        k = re.sub(rf"\.{re.escape(layer)}\.(weight|bias)$", rf".{layer}.base_layer.\1", k)
        k = re.sub(rf"\.{re.escape(layer)}\.(lora_[AB])\.weight$", rf".{layer}.\1.default.weight", k)
    return k


def remap_flash_keys(state: Mapping[str, torch.Tensor]) -> dict[str, tuple[str, torch.Tensor]]:
    """``{canonical key: (checkpoint key, tensor)}``; CheckpointError if two keys collide."""
    from virtime.errors import CheckpointError

    out: dict[str, tuple[str, torch.Tensor]] = {}
    for key, value in state.items():
        k = canonical_key(key)
        if k in out:
            raise CheckpointError(f"checkpoint keys {out[k][0]!r} and {key!r} both name {k!r}")
        out[k] = (key, value)
    return out


def is_flash_state(state: Mapping[str, torch.Tensor]) -> bool:
    """Whether a state dict holds a ViT encoder (``encoder.patch_embed.proj.weight`` in any layout)."""
    return any(canonical_key(k) == "encoder.patch_embed.proj.weight" for k in state)


def flash_config_from_state(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Constructor arguments of :class:`GigaTIMEFlash` read from a state dict's shapes.

    Heads are ``dim // 64`` (ViT head width 64, as in ViT-S/B/L); LoRA alpha is not stored in
    weights and is taken as 16 (the official value) unless a model card says otherwise.
    """
    from virtime.errors import CheckpointError

    s = {k: v for k, (_, v) in remap_flash_keys(state).items()}

    def need(key: str, ndim: int) -> torch.Tensor:
        t = s.get(key)
        if t is None:
            raise CheckpointError(
                f"not a GigaTIME-Flash checkpoint: {key!r} is missing (the official model has "
                "encoder.*, decoder4..decoder1, skip1..skip3 and final_conv)")
        if t.ndim != ndim:
            raise CheckpointError(f"{key}: expected a {ndim}-d tensor, got shape {tuple(t.shape)}")
        return t

    proj = need("encoder.patch_embed.proj.weight", 4)
    dim, in_ch, patch = int(proj.shape[0]), int(proj.shape[1]), int(proj.shape[2])
    if dim % 64:
        raise CheckpointError(f"encoder width {dim} is not a multiple of the ViT head width 64")
    pos = need("encoder.pos_embed", 3)
    grid = math.isqrt(max(int(pos.shape[1]) - 1, 0))
    if grid < 1 or grid * grid + 1 != pos.shape[1]:
        raise CheckpointError(
            f"encoder.pos_embed: shape {tuple(pos.shape)} is not a square grid plus a class slot")
    blocks = {int(m.group(1)) for k in s if (m := re.match(r"encoder\.blocks\.(\d+)\.", k))}
    if not blocks or blocks != set(range(max(blocks) + 1)):
        raise CheckpointError(f"encoder blocks are not numbered 0..N-1: {sorted(blocks)[:16]}")
    fc2 = need("encoder.blocks.0.mlp.fc2.weight", 2)
    lora_a = s.get("encoder.blocks.0.attn.qkv.lora_A.weight")
    decoder = [int(need(f"decoder{i}.0.weight", 4).shape[0]) for i in (4, 3, 2, 1)]
    final = need("final_conv.weight", 4)
    return {
        "in_channels": in_ch, "num_classes": int(final.shape[0]), "img_size": grid * patch,
        "patch": patch, "dim": dim, "depth": max(blocks) + 1, "heads": dim // 64,
        "mlp_hidden": int(fc2.shape[1]), "lora_r": int(lora_a.shape[0]) if lora_a is not None else 0,
        "decoder": decoder,
    }


@dataclass
class FlashLoadReport:
    """What a load did: tensors filled, checkpoint keys not used (ignorable or unexpected)."""

    loaded: int = 0
    ignored: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)


def load_flash_state_dict(
    model: GigaTIMEFlash, state: Mapping[str, torch.Tensor], *, strict: bool = True
) -> FlashLoadReport:
    """Fills every tensor of ``model`` from ``state`` (any accepted layout, :func:`canonical_key`).

    A missing tensor or a shape that differs is always a :class:`~virtime.errors.CheckpointError`
    naming the key and both shapes. Checkpoint tensors the Flash forward never reads (a timm
    ``head`` / ``fc_norm``) are listed in the report; any other unused tensor is an error, or with
    ``strict=False`` a logged warning and listed as unexpected. Nothing is dropped silently.
    """
    from virtime.errors import CheckpointError

    remapped = remap_flash_keys(state)
    own = model.state_dict()
    missing = sorted(k for k in own if k not in remapped)
    shapes = []
    for k in own:
        if k in remapped and tuple(remapped[k][1].shape) != tuple(own[k].shape):
            src = remapped[k][0]
            named = k if src == k else f"{k} (checkpoint key {src})"
            shapes.append(f"{named}: checkpoint {tuple(remapped[k][1].shape)}, "
                          f"model {tuple(own[k].shape)}")
    extra = sorted(remapped[k][0] for k in remapped if k not in own)
    ignored = [k for k in extra if _IGNORABLE.match(canonical_key(k))]
    unexpected = [k for k in extra if k not in ignored]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing tensors: {_few(missing)}")
    if shapes:
        problems.append(f"{len(shapes)} tensors with wrong shapes: {_few(shapes)}")
    if unexpected and strict:
        problems.append(f"{len(unexpected)} unexpected tensors: {_few(unexpected)} "
                        "(strict=False loads anyway and lists them)")
    if problems:
        raise CheckpointError("weights do not match gigatime-flash: " + "; ".join(problems))
    if unexpected:
        logger.warning("GigaTIME-Flash checkpoint tensors not used: %s", _few(unexpected))
    if ignored:
        logger.info("GigaTIME-Flash checkpoint tensors the forward does not read: %s",
                    _few(ignored))
    model.load_state_dict({k: remapped[k][1] for k in own}, strict=True)
    return FlashLoadReport(loaded=len(own), ignored=ignored, unexpected=unexpected)


def _few(keys: list[str], n: int = 8) -> str:
    return ", ".join(keys[:n]) + (f" (+{len(keys) - n} more)" if len(keys) > n else "")
