"""Inference engines behind one protocol: torch, ONNX Runtime and TensorRT, chosen by name.

Importing this package is cheap: backends (and onnxruntime / TensorRT) are imported only when
:func:`create_engine` picks them.

>>> from virtime.engines import create_engine
>>> engine = create_engine(model, backend="auto", precision="fp16")   # doctest: +SKIP
>>> logits = engine.run(batch)            # (N, 3, 256, 256) -> (N, 23, 256, 256) float32
"""

from __future__ import annotations

from virtime.engines.base import (
    BACKENDS,
    PRECISIONS,
    BaseEngine,
    Engine,
    create_engine,
    default_cache_dir,
    is_out_of_memory,
    register_backend,
    registered_backends,
    resolve_backend,
)
from virtime.engines.hashing import model_hash
from virtime.engines.onnx_export import export_onnx

__all__ = [
    "BACKENDS",
    "PRECISIONS",
    "BaseEngine",
    "Engine",
    "create_engine",
    "default_cache_dir",
    "export_onnx",
    "is_out_of_memory",
    "model_hash",
    "register_backend",
    "registered_backends",
    "resolve_backend",
]
