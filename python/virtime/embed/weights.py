"""Loading the official Prov-GigaPath weights, safely and strictly.

Files are read by :func:`virtime.models.checkpoints.read_state_dict` (``torch.load`` with
``weights_only=True``, or safetensors), so a pickle that would run code is refused. The
architecture's sizes are read from the tensor shapes, the model is built on the ``meta`` device
(no 1.1 B random parameters are allocated first) and the tensors are assigned with ``strict``
key matching: any missing, unexpected or mis-shaped key is a :class:`CheckpointError` listing them.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from virtime.embed.slide_encoder import GIGAPATH_SLIDE_CONFIG, SlideEncoder, SlideEncoderConfig
from virtime.embed.tile_encoder import GIGAPATH_TILE_CONFIG, TileEncoder, TileEncoderConfig
from virtime.errors import CheckpointError

__all__ = [
    "is_slide_encoder_state",
    "is_tile_encoder_state",
    "load_slide_encoder",
    "load_state_strict",
    "load_tile_encoder",
    "slide_config_from_state",
    "tile_config_from_state",
]

logger = logging.getLogger(__name__)

TILE_WEIGHTS_HINT = (
    "the Prov-GigaPath tile encoder is a gated download (huggingface.co/prov-gigapath/"
    "prov-gigapath, file pytorch_model.bin): accept its terms, download it yourself and pass "
    "--tile-weights PATH"
)
SLIDE_WEIGHTS_HINT = (
    "the Prov-GigaPath slide encoder is slide_encoder.pth from the same gated repository; "
    "download it yourself and pass --slide-weights PATH"
)


def _strip(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = dict(state)
    for prefix in ("module.", "model."):
        if out and all(k.startswith(prefix) for k in out):
            out = {k[len(prefix):]: v for k, v in out.items()}
    return out


def is_tile_encoder_state(state: Mapping[str, torch.Tensor]) -> bool:
    """True for a timm ViT with layer scale and a packed SwiGLU MLP and no other prefix."""
    s = _strip(state)
    return "patch_embed.proj.weight" in s and "blocks.0.ls1.gamma" in s and "norm.weight" in s


def is_slide_encoder_state(state: Mapping[str, torch.Tensor]) -> bool:
    """True for a LongNetViT state dict (``encoder.layers.N.self_attn.q_proj`` ...)."""
    s = _strip(state)
    return "encoder.layers.0.self_attn.q_proj.weight" in s and "patch_embed.proj.weight" in s


def _depth(state: Mapping[str, torch.Tensor], pattern: str) -> int:
    idx = [int(m.group(1)) for k in state if (m := re.match(pattern, k))]
    return 1 + max(idx) if idx else 0


def tile_config_from_state(
    state: Mapping[str, torch.Tensor], num_heads: int | None = None
) -> TileEncoderConfig:
    """Sizes read from the shapes; heads (not visible in shapes) default to ``embed_dim // 64``."""
    s = _strip(state)
    try:
        proj = s["patch_embed.proj.weight"]
        d, in_chans, patch = int(proj.shape[0]), int(proj.shape[1]), int(proj.shape[2])
        n_pos = int(s["pos_embed"].shape[1]) - 1
        hidden = int(s["blocks.0.mlp.fc1.weight"].shape[0])
    except KeyError as exc:
        raise CheckpointError(f"not a Prov-GigaPath tile encoder: missing {exc}") from None
    grid = round(n_pos**0.5)
    if grid * grid != n_pos:
        raise CheckpointError(f"pos_embed has {n_pos} patch rows, not a square grid")
    heads = num_heads or (GIGAPATH_TILE_CONFIG.num_heads if d == 1536 else max(1, d // 64))
    return replace(
        GIGAPATH_TILE_CONFIG, img_size=grid * patch, patch_size=patch, in_chans=in_chans,
        embed_dim=d, depth=_depth(s, r"blocks\.(\d+)\."), num_heads=heads, mlp_hidden=hidden,
    )


def slide_config_from_state(
    state: Mapping[str, torch.Tensor], num_heads: int | None = None, **overrides: object
) -> SlideEncoderConfig:
    """Sizes read from the shapes; heads default to the official 16."""
    s = _strip(state)
    try:
        proj = s["patch_embed.proj.weight"]
        ffn = s["encoder.layers.0.ffn.fc1.weight"]
    except KeyError as exc:
        raise CheckpointError(f"not a Prov-GigaPath slide encoder: missing {exc}") from None
    return replace(
        GIGAPATH_SLIDE_CONFIG, in_chans=int(proj.shape[1]), embed_dim=int(proj.shape[0]),
        depth=_depth(s, r"encoder\.layers\.(\d+)\."), ffn_dim=int(ffn.shape[0]),
        num_heads=num_heads or GIGAPATH_SLIDE_CONFIG.num_heads, **overrides,  # type: ignore[arg-type]
    )


def load_state_strict(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Assign ``state`` to ``model`` (may live on ``meta``) if keys and shapes match exactly."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(
        f"{k} {tuple(state[k].shape)} != {tuple(own[k].shape)}"
        for k in set(own) & set(state)
        if tuple(own[k].shape) != tuple(state[k].shape)
    )
    if missing or unexpected or shapes:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape", shapes)):
            if keys:
                more = f" (+{len(keys) - 8} more)" if len(keys) > 8 else ""
                parts.append(f"{label} {len(keys)}: {', '.join(keys[:8])}{more}")
        raise CheckpointError(
            f"{source}: weights do not match {type(model).__name__}: " + "; ".join(parts)
        )
    tensors = {k: v.to(torch.float32) if v.is_floating_point() else v for k, v in state.items()}
    model.load_state_dict(tensors, strict=True, assign=True)


def _read(path: str | os.PathLike[str], hint: str) -> dict[str, torch.Tensor]:
    from virtime.models.checkpoints import read_state_dict

    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: weights file not found; {hint}")
    return _strip(read_state_dict(p))


def load_tile_encoder(
    path: str | os.PathLike[str], *, device: str | torch.device = "cpu", num_heads: int | None = None
) -> TileEncoder:
    """The tile encoder in eval mode from the official ``pytorch_model.bin`` (or safetensors)."""
    state = _read(path, TILE_WEIGHTS_HINT)
    if not is_tile_encoder_state(state):
        raise CheckpointError(f"{path}: not a Prov-GigaPath tile encoder (first keys: "
                              f"{', '.join(list(state)[:5])})")
    config = tile_config_from_state(state, num_heads)
    with torch.device("meta"):
        model = TileEncoder(config)
    load_state_strict(model, state, str(path))
    logger.info("loaded tile encoder %s from %s", config, path)
    return model.eval().to(device)


def load_slide_encoder(
    path: str | os.PathLike[str], *, device: str | torch.device = "cpu", num_heads: int | None = None,
    **overrides: object,
) -> SlideEncoder:
    """The slide encoder in eval mode from the official ``slide_encoder.pth``.

    The official file wraps the state dict as ``{"model": ...}``; a stored ``pos_embed`` (the fixed
    sin-cos table, recomputed here) is dropped. ``overrides`` set config fields the weights cannot
    reveal (``segment_lengths``, ``dilated_ratios``, ``slide_ngrids`` ...).
    """
    state = _read(path, SLIDE_WEIGHTS_HINT)
    if not is_slide_encoder_state(state):
        raise CheckpointError(f"{path}: not a Prov-GigaPath slide encoder (first keys: "
                              f"{', '.join(list(state)[:5])})")
    if state.pop("pos_embed", None) is not None:
        logger.info("%s: dropped the stored fixed pos_embed table (recomputed from coordinates)",
                    path)
    config = slide_config_from_state(state, num_heads, **overrides)
    with torch.device("meta"):
        model = SlideEncoder(config)
    load_state_strict(model, state, str(path))
    logger.info("loaded slide encoder %s from %s", config, path)
    return model.eval().to(device)
