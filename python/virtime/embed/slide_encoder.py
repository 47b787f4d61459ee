"""The Prov-GigaPath slide encoder: LongNet (dilated attention) over a slide's tile embeddings.

Parameter names follow the official ``slide_encoder.pth`` (``LongNetViT``, config
``gigapath_slide_enc12l768d``, torchscale encoder with ``subln=True``, pre-norm, output norm)::

    cls_token (1,1,768)   patch_embed.proj.{weight (768,1536), bias}
    encoder.layers.i.self_attn.{q_proj,k_proj,v_proj,out_proj}.{weight,bias}
    encoder.layers.i.self_attn.inner_attn_ln.{weight,bias}
    encoder.layers.i.self_attn_layer_norm.{weight,bias}
    encoder.layers.i.ffn.{fc1 (3072,768), fc2 (768,3072)}.{weight,bias}
    encoder.layers.i.ffn.ffn_layernorm.{weight,bias} (3072)
    encoder.layers.i.final_layer_norm.{weight,bias}
    encoder.layer_norm.{weight,bias}     norm.{weight,bias}

The 2-D sin-cos position table of the official model (a non-persistent ``(1, 1000**2 + 1, 768)``
buffer, 3 GB) is not stored: the rows a slide needs are computed from its tile coordinates.

Dilated attention follows LongNet: for each branch ``(segment w, dilation r)`` the sequence is cut
into segments of ``min(w, L)`` tokens; in each segment the heads are split into ``r`` groups and
group ``j`` attends among the tokens at offsets ``j, j+r, j+2r, ...``. Branch outputs are merged
with weights ``softmax`` of their log-sum-exp, i.e. exactly as one softmax over the union of the
keys each query saw. As in the official code, the zero vectors that pad a sequence to a whole
number of segments (and a segment to a multiple of ``r``) are not masked: they act as keys with
score 0 and value 0. With one branch ``(w >= L, r = 1)`` this is plain dense attention.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "GIGAPATH_SLIDE_CONFIG",
    "SlideEncoder",
    "SlideEncoderConfig",
    "dilated_attention",
    "optimal_segment_lengths",
    "sincos_position_embedding",
    "slide_encoder_param_count",
]

#: Score-matrix elements per chunk when computing a branch's log-sum-exp (bounds memory).
_CHUNK_ELEMENTS = 1 << 25


def optimal_segment_lengths(max_wsi_size: int = 262144, tile_size: int = 256) -> tuple[int, ...]:
    """Five segment lengths log-spaced from 1024 to the longest sequence ``(max_wsi/tile)**2``.

    The official rule: ``2 ** linspace(10, int(log2(max_len)), 5)`` truncated to integers, which
    gives ``(1024, 5792, 32768, 185363, 1048576)`` for the defaults.
    """
    max_len = (max_wsi_size // tile_size) ** 2
    exps = np.linspace(np.log2(1024), int(np.log2(max_len)), 5)
    return tuple(int(v) for v in np.power(2, exps).astype(int))


@dataclass(frozen=True)
class SlideEncoderConfig:
    """Architecture of the slide encoder; defaults are ``gigapath_slide_enc12l768d``."""

    in_chans: int = 1536
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 16
    ffn_dim: int = 3072
    slide_ngrids: int = 1000
    tile_size: int = 256
    max_wsi_size: int = 262144
    dilated_ratios: tuple[int, ...] = (1, 2, 4, 8, 16)
    #: ``None``: :func:`optimal_segment_lengths` of ``max_wsi_size`` and ``tile_size``.
    segment_lengths: tuple[int, ...] | None = None
    layernorm_eps: float = 1e-5
    norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        if self.embed_dim % self.num_heads or self.embed_dim % 4:
            raise ValueError("embed_dim must be divisible by num_heads and by 4")
        if len(self.segments) != len(self.dilated_ratios):
            raise ValueError("segment_lengths and dilated_ratios must have the same length")
        if min(self.segments) < 1 or min(self.dilated_ratios) < 1:
            raise ValueError("segment lengths and dilation ratios must be >= 1")

    @property
    def segments(self) -> tuple[int, ...]:
        if self.segment_lengths is not None:
            return tuple(int(s) for s in self.segment_lengths)
        return optimal_segment_lengths(self.max_wsi_size, self.tile_size)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


#: The released Prov-GigaPath slide encoder.
GIGAPATH_SLIDE_CONFIG = SlideEncoderConfig()


def slide_encoder_param_count(config: SlideEncoderConfig = GIGAPATH_SLIDE_CONFIG) -> int:
    """Parameter count from the layout (86,330,880 for the official config)."""
    d, f = config.embed_dim, config.ffn_dim
    layer = 4 * (d * d + d) + 2 * d + 2 * d + (f * d + f) + (d * f + d) + 2 * f + 2 * d
    return (config.in_chans * d + d) + d + config.depth * layer + 2 * d + 2 * d


def _sincos_1d(dim: int, pos: torch.Tensor) -> torch.Tensor:
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0))
    out = pos.to(torch.float64)[:, None] * omega[None, :]
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)


def sincos_position_embedding(
    coords: torch.Tensor, dim: int, slide_ngrids: int = 1000, tile_size: int = 256
) -> torch.Tensor:
    """Rows of the official fixed 2-D sin-cos table for tile coordinates ``(..., 2)`` = (x, y).

    The official model looks up row ``floor(x/256) * ngrids + floor(y/256) + 1`` of a table whose
    first half encodes that row's column index and second half its row index; computing the rows
    directly gives the same numbers (float64, then float32) without the 3 GB table.
    """
    cell = torch.floor(coords.to(torch.float64) / float(tile_size)).long()
    flat = cell[..., 0] * slide_ngrids + cell[..., 1]
    if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= slide_ngrids**2):
        raise ValueError(
            f"tile coordinates fall outside the {slide_ngrids}x{slide_ngrids} position grid "
            f"({tile_size}-px cells at the encoder's 0.5 um/px)"
        )
    r, c = (flat // slide_ngrids).reshape(-1), (flat % slide_ngrids).reshape(-1)
    emb = torch.cat([_sincos_1d(dim // 2, c), _sincos_1d(dim // 2, r)], dim=1)
    return emb.reshape(*flat.shape, dim).to(torch.float32)


def _branch(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, segment: int, ratio: int, need_lse: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One (segment, dilation) branch: outputs ``(B,L,H,Dh)`` and log-sum-exp ``(B,L,H)``."""
    b, length, h, dh = q.shape
    s = min(segment, length)
    pad_len = (-length) % s
    pad_seg = (-s) % ratio
    n, s2 = (length + pad_len) // s, s + pad_seg
    m = s2 // ratio
    hp = -(-h // ratio)  # heads per group (the last group may be short)
    group = torch.arange(h, device=q.device) // hp
    heads = torch.arange(h, device=q.device)

    def sparse(x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (0, 0, 0, 0, 0, pad_len)).view(b, n, s, h, dh)
        x = F.pad(x, (0, 0, 0, 0, 0, pad_seg)).view(b, n, m, ratio, h, dh)
        x = x[:, :, :, group, heads, :]  # (B, n, m, H, Dh): head g-group keeps offset g
        return x.permute(0, 1, 3, 2, 4).reshape(b * n, h, m, dh)

    qs, ks, vs = sparse(q), sparse(k), sparse(v)
    out = torch.empty_like(qs)
    lse = torch.empty(qs.shape[:3], dtype=torch.float32, device=q.device) if need_lse else None
    step = max(1, _CHUNK_ELEMENTS // max(1, h * m * m))
    scale = 1.0 / math.sqrt(dh)
    for i in range(0, b * n, step):
        sl = slice(i, i + step)
        out[sl] = F.scaled_dot_product_attention(qs[sl], ks[sl], vs[sl])
        if lse is not None:
            scores = torch.matmul(qs[sl].float(), ks[sl].float().transpose(-1, -2)) * scale
            lse[sl] = torch.logsumexp(scores, dim=-1)

    def dense(x: torch.Tensor, fill: float) -> torch.Tensor:
        tail = x.shape[3:]
        x = x.reshape(b, n, h, m, *tail).transpose(2, 3)  # (B, n, m, H, ...)
        full = x.new_full((b, n, m, ratio, h, *tail), fill)
        full[:, :, :, group, heads] = x
        full = full.reshape(b, n, s2, h, *tail)[:, :, :s]
        return full.reshape(b, n * s, h, *tail)[:, :length]

    o = dense(out, 0.0)
    return o, (dense(lse, -1e8) if lse is not None else None)


def dilated_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    segment_lengths: tuple[int, ...],
    dilated_ratios: tuple[int, ...],
) -> torch.Tensor:
    """LongNet dilated attention of ``q, k, v`` ``(B, L, H, Dh)``; returns ``(B, L, H, Dh)``.

    Each branch runs :func:`torch.nn.functional.scaled_dot_product_attention` on its sparse
    segments; branches are merged by their log-sum-exp weights (see the module docstring).
    """
    if len(segment_lengths) != len(dilated_ratios) or not segment_lengths:
        raise ValueError("need one dilation ratio per segment length")
    need_lse = len(segment_lengths) > 1
    outs, lses = [], []
    for seg, ratio in zip(segment_lengths, dilated_ratios):
        o, lse = _branch(q, k, v, int(seg), int(ratio), need_lse)
        outs.append(o)
        lses.append(lse)
    if not need_lse:
        return outs[0]
    stacked = torch.stack(lses, dim=0)  # (branches, B, L, H)
    weights = torch.softmax(stacked, dim=0).to(q.dtype)
    total = outs[0] * weights[0, ..., None]
    for o, w in zip(outs[1:], weights[1:]):
        total = total + o * w[..., None]
    return total


class _DilatedSelfAttention(nn.Module):
    def __init__(self, cfg: SlideEncoderConfig) -> None:
        super().__init__()
        d = cfg.embed_dim
        self.num_heads = cfg.num_heads
        self.segments = cfg.segments
        self.ratios = tuple(cfg.dilated_ratios)
        self.k_proj = nn.Linear(d, d)
        self.v_proj = nn.Linear(d, d)
        self.q_proj = nn.Linear(d, d)
        self.out_proj = nn.Linear(d, d)
        self.inner_attn_ln = nn.LayerNorm(d, eps=cfg.layernorm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        shape = (b, n, self.num_heads, d // self.num_heads)
        q = self.q_proj(x).view(shape)
        k = self.k_proj(x).view(shape)
        v = self.v_proj(x).view(shape)
        attn = dilated_attention(q, k, v, self.segments, self.ratios).reshape(b, n, d)
        return self.out_proj(self.inner_attn_ln(attn))


class _FeedForward(nn.Module):
    def __init__(self, cfg: SlideEncoderConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(cfg.embed_dim, cfg.ffn_dim)
        self.fc2 = nn.Linear(cfg.ffn_dim, cfg.embed_dim)
        self.ffn_layernorm = nn.LayerNorm(cfg.ffn_dim, eps=cfg.layernorm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.gelu(self.fc1(x).float()).to(x.dtype)
        return self.fc2(self.ffn_layernorm(h))


class _LongNetLayer(nn.Module):
    def __init__(self, cfg: SlideEncoderConfig) -> None:
        super().__init__()
        self.self_attn = _DilatedSelfAttention(cfg)
        self.self_attn_layer_norm = nn.LayerNorm(cfg.embed_dim, eps=cfg.layernorm_eps)
        self.ffn = _FeedForward(cfg)
        self.final_layer_norm = nn.LayerNorm(cfg.embed_dim, eps=cfg.layernorm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.self_attn_layer_norm(x))
        return x + self.ffn(self.final_layer_norm(x))


class _LongNetEncoder(nn.Module):
    def __init__(self, cfg: SlideEncoderConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(_LongNetLayer(cfg) for _ in range(cfg.depth))
        self.layer_norm = nn.LayerNorm(cfg.embed_dim, eps=cfg.layernorm_eps)


class _SlidePatchEmbed(nn.Module):
    def __init__(self, cfg: SlideEncoderConfig) -> None:
        super().__init__()
        self.proj = nn.Linear(cfg.in_chans, cfg.embed_dim)


class SlideEncoder(nn.Module):
    """Tile embeddings ``(B, L, 1536)`` + coordinates ``(B, L, 2)`` to slide embeddings.

    Coordinates are the tiles' top-left (x, y) in pixels at 0.5 um/px (the tile encoder's
    resolution), so ``coords // 256`` is the tile grid position.
    """

    def __init__(self, config: SlideEncoderConfig = GIGAPATH_SLIDE_CONFIG) -> None:
        super().__init__()
        self.config = config
        d = config.embed_dim
        self.patch_embed = _SlidePatchEmbed(config)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.encoder = _LongNetEncoder(config)
        self.norm = nn.LayerNorm(d, eps=config.norm_eps)
        if self.cls_token.device.type != "meta":
            for m in self.modules():
                if isinstance(m, nn.Linear):
                    nn.init.xavier_uniform_(m.weight)
                    nn.init.zeros_(m.bias)
            nn.init.normal_(self.cls_token, std=0.02)

    @property
    def embed_dim(self) -> int:
        return self.config.embed_dim

    def forward(
        self, tile_embeds: torch.Tensor, coords: torch.Tensor, all_layers: bool = False
    ) -> torch.Tensor | list[torch.Tensor]:
        """The slide embedding ``(B, D)``; with ``all_layers`` a list of ``depth + 1`` of them.

        As in the official model, the per-layer list is the class token of each layer's output
        (the input projection first) after the final ``norm`` but *without* the encoder's output
        LayerNorm, so its last entry differs slightly from the default output.
        """
        if tile_embeds.ndim == 2:
            tile_embeds, coords = tile_embeds[None], coords[None]
        if tile_embeds.shape[-1] != self.config.in_chans or coords.shape[:-1] != tile_embeds.shape[:-1]:
            raise ValueError(
                f"expected tile embeddings (B, L, {self.config.in_chans}) and coords (B, L, 2), got "
                f"{tuple(tile_embeds.shape)} and {tuple(coords.shape)}"
            )
        cfg = self.config
        x = self.patch_embed.proj(tile_embeds)
        pos = sincos_position_embedding(coords, cfg.embed_dim, cfg.slide_ngrids, cfg.tile_size)
        x = x + pos.to(device=x.device, dtype=x.dtype)
        cls = self.cls_token.expand(x.shape[0], -1, -1)  # its position row is all zeros
        x = torch.cat([cls, x], dim=1)
        states = [x] if all_layers else []
        for layer in self.encoder.layers:
            x = layer(x)
            if all_layers:
                states.append(x)
        if all_layers:
            return [self.norm(s)[:, 0] for s in states]
        return self.norm(self.encoder.layer_norm(x))[:, 0]
