"""Prov-GigaPath embeddings: tile encoder, LongNet slide encoder, slide embedding, linear probes.

>>> from virtime.embed import load_tile_encoder, load_slide_encoder, embed_slide  # doctest: +SKIP
>>> tile = load_tile_encoder("pytorch_model.bin"); slide = load_slide_encoder("slide_encoder.pth")
>>> result = embed_slide("slide.svs", tile, "out/slide", slide_encoder=slide)   # doctest: +SKIP

Importing this package imports torch; scikit-learn is imported only by the probe functions.
"""

from __future__ import annotations

from virtime.embed.onnx import ensure_tile_encoder_onnx, export_tile_encoder_onnx
from virtime.embed.pipeline import EmbedConfig, EmbedResult, embed_slide, encode_slide
from virtime.embed.probe import ProbeResult, delong_auc_ci, embedding_frame, fit_probe, probe
from virtime.embed.slide_encoder import (
    GIGAPATH_SLIDE_CONFIG,
    SlideEncoder,
    SlideEncoderConfig,
    dilated_attention,
    optimal_segment_lengths,
    sincos_position_embedding,
    slide_encoder_param_count,
)
from virtime.embed.tile_encoder import (
    GIGAPATH_TILE_CONFIG,
    TileEmbeddingHead,
    TileEncoder,
    TileEncoderConfig,
    tile_encoder_flops,
    tile_encoder_param_count,
)
from virtime.embed.weights import load_slide_encoder, load_tile_encoder

__all__ = [
    "GIGAPATH_SLIDE_CONFIG",
    "GIGAPATH_TILE_CONFIG",
    "EmbedConfig",
    "EmbedResult",
    "ProbeResult",
    "SlideEncoder",
    "SlideEncoderConfig",
    "TileEmbeddingHead",
    "TileEncoder",
    "TileEncoderConfig",
    "delong_auc_ci",
    "dilated_attention",
    "embed_slide",
    "embedding_frame",
    "encode_slide",
    "ensure_tile_encoder_onnx",
    "export_tile_encoder_onnx",
    "fit_probe",
    "load_slide_encoder",
    "load_tile_encoder",
    "optimal_segment_lengths",
    "probe",
    "sincos_position_embedding",
    "slide_encoder_param_count",
    "tile_encoder_flops",
    "tile_encoder_param_count",
]
