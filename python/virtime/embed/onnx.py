"""ONNX export of the tile encoder, for the ONNX Runtime and TensorRT engines.

:func:`virtime.engines.export_onnx` checks for dense ``(N, C, H, W)`` logits at the input size;
an embedding is a ``(N, D, 1, 1)`` map, so this exporter writes the same graph interface
(``input`` -> ``logits``, dynamic batch, fixed 224-px window, weights hash in the metadata)
with that check adapted. Graphs over 2 GB (the 1.1 B-parameter encoder) keep their weights in an
external-data file beside the ``.onnx``, as protobuf requires.
"""

from __future__ import annotations

import copy
import logging
import os
import warnings
from pathlib import Path

import torch

from virtime.embed.tile_encoder import TileEmbeddingHead, TileEncoder
from virtime.errors import InvalidArgumentError

__all__ = ["ensure_tile_encoder_onnx", "export_tile_encoder_onnx"]

logger = logging.getLogger(__name__)


def export_tile_encoder_onnx(
    encoder: TileEncoder, path: str | os.PathLike[str], *, opset: int = 17
) -> Path:
    """Write ``input (N,3,S,S) -> logits (N,D,1,1)`` for the encoder; returns ``path``.

    Exported from an fp32 CPU copy in eval mode, checked with ``onnx.checker`` and moved into
    place atomically (its external-data file first, when there is one).
    """
    import onnx

    from virtime import __version__
    from virtime.engines.hashing import model_hash
    from virtime.engines.onnx_export import INPUT_NAME, OUTPUT_NAME
    from virtime.io import atomic_files

    if not isinstance(encoder, TileEncoder):
        raise InvalidArgumentError(f"expected a TileEncoder, got {type(encoder).__name__}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    size = encoder.config.img_size
    head = TileEmbeddingHead(copy.deepcopy(encoder).to(device="cpu", dtype=torch.float32)).eval()
    example = torch.zeros(1, 3, size, size)
    # External data (a large encoder's weights) lands beside the graph and is renamed first.
    with atomic_files(path, mode=0o644) as tmp:
        with warnings.catch_warnings():
            # The TorchScript exporter warns that it is legacy; it needs no onnxscript.
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(
                head, (example,), str(tmp), dynamo=False, input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                opset_version=opset, do_constant_folding=True,
            )
        proto = onnx.load(str(tmp), load_external_data=False)
        meta = {
            "virtime_version": __version__,
            "model_sha256": model_hash(encoder),
            "window": str(size),
            "out_channels": str(encoder.embed_dim),
            "kind": "gigapath-tile-encoder",
        }
        for key, value in meta.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(proto, str(tmp))
        onnx.checker.check_model(str(tmp))
    logger.info("exported tile encoder to %s (window %d, opset %d)", path, size, opset)
    return path


def ensure_tile_encoder_onnx(
    encoder: TileEncoder, cache_dir: str | os.PathLike[str], *, opset: int = 17
) -> Path:
    """A cached export keyed by the weights' hash: ``cache/onnx/<hash16>-embed-op<opset>.onnx``."""
    import onnx

    from virtime.engines.hashing import model_hash

    path = Path(cache_dir) / "onnx" / f"{model_hash(encoder)[:16]}-embed-op{opset}.onnx"
    if path.is_file():
        try:
            onnx.checker.check_model(str(path))
            return path
        except Exception as exc:  # noqa: BLE001 - a corrupt cache entry of any kind: export again
            logger.warning("cached ONNX export %s is invalid (%s); exporting again", path, exc)
    return export_tile_encoder_onnx(encoder, path, opset=opset)
