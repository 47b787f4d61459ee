"""Export a torch model to ONNX for ONNX Runtime and TensorRT, checked and written atomically.

The TorchScript-based exporter (``dynamo=False``) is used because the dynamo exporter needs
``onnxscript``, which virtime does not depend on; its deprecation warning is silenced here on
purpose. The file carries the weights' hash and the window in its metadata so caches built from it
can be traced back to the model. Models with a ``fold_position_embedding(window)`` method
(GigaTIME-Flash) have their position-grid resize computed once for the window before tracing, so
the graph holds it as a constant (no bicubic ``Resize`` for TensorRT to support). LoRA adapters
(GigaTIME-Flash's ``qkv``/``proj``) are merged into their base weights before tracing
(:func:`virtime.models.lora.merge_lora`): one MatMul per layer instead of three.
"""

from __future__ import annotations

import copy
import logging
import os
import warnings
from pathlib import Path
from typing import Any

from virtime.errors import CheckpointError, InvalidArgumentError, ModelMismatchError

__all__ = ["INPUT_NAME", "OUTPUT_NAME", "ensure_onnx", "export_onnx"]

logger = logging.getLogger(__name__)

INPUT_NAME = "input"
OUTPUT_NAME = "logits"


def export_onnx(
    model: Any,
    path: str | os.PathLike[str],
    *,
    window: int = 256,
    opset: int = 17,
    dynamic_batch: bool = True,
) -> Path:
    """Write ``model`` as an ONNX graph ``input (N,3,window,window) -> logits (N,C,window,window)``.

    The model is exported from an fp32 CPU copy in eval mode (the caller's module is untouched),
    checked with ``onnx.checker`` and moved into place atomically. Only the batch axis is dynamic
    (``dynamic_batch``); the window is fixed so TensorRT can plan for it.
    """
    import onnx
    import torch

    from virtime import __version__
    from virtime.engines.hashing import model_hash
    from virtime.io import atomic_path
    from virtime.models.lora import merge_lora

    if window < 1:
        raise InvalidArgumentError(f"window must be >= 1, got {window}")
    if not isinstance(model, torch.nn.Module):
        raise InvalidArgumentError(f"export_onnx needs a torch.nn.Module, got {type(model).__name__}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cpu_model = copy.deepcopy(model).to(device="cpu", dtype=torch.float32).eval()
    fold = getattr(cpu_model, "fold_position_embedding", None)
    if callable(fold):  # GigaTIME-Flash: the bicubic position-grid resize becomes a constant
        fold(window)
    weights_sha256 = model_hash(cpu_model)  # of the weights as given, before merging adapters
    merge_lora(cpu_model)
    example = torch.zeros(1, 3, window, window, dtype=torch.float32)
    with torch.inference_mode():
        out = cpu_model(example)
    if not isinstance(out, torch.Tensor) or out.ndim != 4 or tuple(out.shape[2:]) != (window, window):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelMismatchError(
            f"model must map (N,3,{window},{window}) to (N,C,{window},{window}) logits, got {shape}"
        )
    axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None
    with atomic_path(path, mode=0o644) as tmp:  # 0o644: a cache folder is often shared
        with warnings.catch_warnings():
            # The legacy exporter warns that it is legacy; it is the one that needs no onnxscript.
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", UserWarning)
            torch.onnx.export(
                cpu_model,
                (example,),
                str(tmp),
                dynamo=False,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes=axes,
                opset_version=opset,
                do_constant_folding=True,
            )
        proto = onnx.load(str(tmp))
        meta = {
            "virtime_version": __version__,
            "model_sha256": weights_sha256,
            "window": str(window),
            "out_channels": str(int(out.shape[1])),
        }
        for key, value in meta.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(proto, str(tmp))
        onnx.checker.check_model(str(tmp))
    logger.info("exported ONNX model to %s (window %d, opset %d)", path, window, opset)
    return path


def ensure_onnx(
    model_or_onnx: Any,
    cache_dir: str | os.PathLike[str],
    *,
    window: int = 256,
    opset: int = 17,
) -> Path:
    """An ONNX path for ``model_or_onnx``: the path itself, or a cached export keyed by the weights.

    The export lands in ``cache_dir/onnx/<hash16>-w<window>-op<opset>.onnx`` and is reused on the
    next call with the same weights, after checking its sidecar: the full hash of the weights it
    was exported from and the sha256 of its bytes. An altered, truncated or unvouched file is
    exported again, with a warning (see :func:`virtime.engines.engine_cache.cached_file`).
    """
    import onnx

    from virtime.engines.engine_cache import cached_file
    from virtime.engines.hashing import model_hash

    if isinstance(model_or_onnx, (str, os.PathLike)):
        path = Path(model_or_onnx)
        if not path.is_file():
            raise CheckpointError(f"{path}: ONNX file not found")
        try:
            onnx.checker.check_model(str(path))
        except Exception as exc:  # onnx raises several unrelated types for a bad file
            raise CheckpointError(f"{path}: not a valid ONNX model ({exc})") from exc
        return path
    from virtime.models.lora import has_lora

    digest = model_hash(model_or_onnx)
    # "-lora-merged": exports of models with adapters made before they were merged are not reused
    tag = "-lora-merged" if has_lora(model_or_onnx) else ""
    path = Path(cache_dir) / "onnx" / f"{digest[:16]}-w{window}-op{opset}{tag}.onnx"
    built_from = {"weights_sha256": digest, "window": int(window), "opset": int(opset)}
    if tag:
        built_from["lora"] = "merged"
    return cached_file(
        path, built_from,
        lambda tmp: export_onnx(model_or_onnx, tmp, window=window, opset=opset),
        kind="ONNX export",
    )
