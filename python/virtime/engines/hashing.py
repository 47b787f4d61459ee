"""Content hashes of models, so caches and output tables can name the exact weights they came from.

A hash of the *weights* (not of a file name or a pickle) means the same model loaded from a
checkpoint, a safetensors file or built in memory maps to the same cache entries, and a model
changed by one parameter does not.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from virtime.errors import InvalidArgumentError

__all__ = ["file_sha256", "model_hash", "state_dict_sha256"]

_CHUNK = 1 << 20


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def state_dict_sha256(state: Mapping[str, Any]) -> str:
    """Hex sha256 over a state dict in a canonical order.

    Keys are sorted; for each, the key, dtype and shape are hashed before the raw little-endian
    bytes of the contiguous CPU tensor, so renaming, reshaping or casting a tensor changes the hash.
    """
    import torch

    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key]
        if not isinstance(t, torch.Tensor):
            t = torch.as_tensor(t)
        t = t.detach().to("cpu").contiguous()
        h.update(key.encode("utf-8") + b"\0")
        h.update(str(t.dtype).encode() + b"\0")
        h.update(repr(tuple(t.shape)).encode() + b"\0")
        # numpy has no bfloat16: hash the raw bytes through a same-size integer view.
        raw = t.view(torch.int16) if t.dtype == torch.bfloat16 else t
        h.update(raw.numpy().tobytes())
    return h.hexdigest()


def model_hash(model_or_path: Any) -> str:
    """sha256 of a ``torch.nn.Module``'s state dict, a state-dict mapping, or a file (ONNX).

    Returns the full hex digest; callers that need a short tag take a prefix.
    """
    if isinstance(model_or_path, (str, os.PathLike)):
        return file_sha256(Path(model_or_path))
    if isinstance(model_or_path, Mapping):
        return state_dict_sha256(model_or_path)
    state_dict = getattr(model_or_path, "state_dict", None)
    if state_dict is None:
        raise InvalidArgumentError(
            f"cannot hash a {type(model_or_path).__name__}: not a module, mapping or path"
        )
    return state_dict_sha256(state_dict())
