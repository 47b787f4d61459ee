"""Loading and saving translator weights, safely.

Two kinds of files are read:

* the official GigaTIME ``model.pth`` (a plain state dict, or ``{"state_dict": ...}``), and any
  ``.pt``/``.pth`` in that layout: read with ``torch.load(weights_only=True)``, which refuses any
  pickle that would construct arbitrary objects or run code;
* virtime's own checkpoints: ``NAME.safetensors`` plus the model card ``NAME.json``.

The architecture is recognised from the weights (:func:`virtime.models.registry.detect_architecture`);
mismatching keys are an error that lists them.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from virtime.errors import CheckpointError
from virtime.io import atomic_write_bytes
from virtime.models.card import ModelCard, sha256_file
from virtime.models.file_kind import describe_non_checkpoint
from virtime.models.registry import build_model, detect_architecture, strip_module_prefix

__all__ = [
    "card_path_for",
    "load",
    "read_source_config",
    "read_state_dict",
    "save",
    "save_official_layout",
]

logger = logging.getLogger(__name__)

_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")


def card_path_for(weights: str | os.PathLike[str]) -> Path:
    """The model card path beside a weights file: ``NAME.safetensors`` -> ``NAME.json``."""
    return Path(weights).with_suffix(".json")


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Tensors of a weights file (safetensors, or a pickle read with ``weights_only=True``).

    Raises CheckpointError naming the file if it is missing, corrupt, unsafe (a pickle that
    would execute code or build objects other than tensors and containers), or not a state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found")
    try:
        kind = describe_non_checkpoint(path)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read the weights file ({exc.strerror})") from exc
    if kind is not None:
        raise CheckpointError(f"{path}: not a checkpoint: {kind}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path), device="cpu"))
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from exc
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path}: refused to load: the file holds Python objects other than tensors"
            f"{_unsupported_global(exc)}, and virtime never unpickles those (a pickle can run "
            f"code); save the weights as a state dict (torch.save(model.state_dict(), PATH)) "
            f"or as .safetensors"
        ) from exc
    except Exception as exc:  # noqa: BLE001 - the unpickler fails on junk with any error
        raise CheckpointError(f"{path}: corrupt or unreadable checkpoint "
                              f"({type(exc).__name__}: {_first_line(exc)})") from exc
    if isinstance(obj, Mapping):
        for key in _WRAPPER_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(
                isinstance(v, torch.Tensor) for v in inner.values()
            ):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{path}: not a state dict (got {type(obj).__name__})")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: not a state dict; non-tensor entries: {', '.join(bad[:8])}")
    return {str(k): v for k, v in obj.items()}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _unsupported_global(exc: pickle.UnpicklingError) -> str:
    """`` (e.g. mymodule.MyClass)``: the object torch refused, from its message (whose advice
    to turn the check off is not passed on)."""
    for line in str(exc).splitlines():
        if "Unsupported global" in line and "GLOBAL" in line:
            name = line.split("GLOBAL", 1)[1].strip().split()[0].rstrip(",.")
            return f" (e.g. {name})"
    return ""


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


def _load_into(model: nn.Module, state: Mapping[str, torch.Tensor], architecture: str,
               source: str, strict: bool = True) -> list[str]:
    """Fills ``model`` from ``state``; returns checkpoint keys loaded nowhere (reported)."""
    if architecture == "gigatime-flash":
        from virtime.models.flash import load_flash_state_dict

        try:
            report = load_flash_state_dict(model, state, strict=strict)  # type: ignore[arg-type]
        except CheckpointError as exc:
            raise CheckpointError(f"{source}: {exc}") from None
        return report.ignored + report.unexpected
    state = strip_module_prefix(state)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(f"{k}: checkpoint {tuple(state[k].shape)}, model {tuple(own[k].shape)}"
                    for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or shapes:
        raise CheckpointError(f"{source}: weights do not match {architecture}: "
                              f"{_describe(missing, unexpected, shapes)}")
    model.load_state_dict(state, strict=True)
    return []


def read_source_config(weights: Path) -> dict[str, Any] | None:
    """The ``config.json`` published beside an official ``model.pth``, if there is one.

    Read as plain JSON only (no code, no NaN/Infinity); CheckpointError naming the file if it is
    not a JSON object.
    """
    path = weights.parent / "config.json"
    if weights.suffix == ".safetensors" or not path.is_file():
        return None

    def _reject(token: str) -> Any:
        raise ValueError(f"{token} is not plain JSON")

    try:
        data = json.loads(path.read_text(encoding="utf-8"), parse_constant=_reject)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable JSON config ({exc})") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def load(
    path: str | os.PathLike[str],
    *,
    architecture: str | None = None,
    device: str | torch.device = "cpu",
    strict: bool = True,
) -> nn.Module:
    """A translator in eval mode from ``path``, with its :class:`ModelCard` as ``model.card``.

    Parameters
    ----------
    path
        ``.safetensors`` (a card ``.json`` beside it is used if present) or ``.pth``/``.pt``
        (a ``config.json`` beside it, as published with GigaTIME-Flash, is recorded in the card).
    architecture
        Force ``"gigatime"`` or ``"gigatime-flash"`` instead of recognising it from the keys.
    strict
        GigaTIME-Flash only: with ``False`` checkpoint tensors the model has no place for are
        logged and listed in ``model.card.training["unused_tensors"]`` instead of refused.
        Missing tensors and wrong shapes are always an error.
    """
    path = Path(path)
    state = read_state_dict(path)
    card_file = card_path_for(path)
    card: ModelCard | None = None
    if path.suffix == ".safetensors" and card_file.is_file():
        card = ModelCard.load(card_file)
    try:
        detected, config = detect_architecture(state)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    arch = architecture or (card.architecture if card else detected)
    if arch != detected:
        config = {}
    if card is not None:
        config = {**config, **card.config}
    else:
        from virtime import __version__

        training: dict[str, Any] = {"source": "external checkpoint"}
        source_config = read_source_config(path)
        if source_config is not None:
            n = source_config.get("num_classes")
            if isinstance(n, int) and n != config.get("num_classes", n):
                raise CheckpointError(f"{path.parent / 'config.json'}: num_classes {n}, but the "
                                      f"weights have {config['num_classes']} output channels")
            training["source_config"] = source_config
        card = ModelCard(architecture=arch, config=config, virtime_version=__version__,
                         training=training)
    card.weights_file = path.name
    card.sha256 = sha256_file(path)
    try:
        model = build_model(arch, config)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot build {arch} with {config}: {exc}") from exc
    unused = _load_into(model, state, arch, str(path), strict=strict)
    if unused:
        card.training = {**card.training, "unused_tensors": unused}
    model.eval().to(device)
    model.card = card  # type: ignore[assignment]
    logger.info("loaded %s (%s) from %s, sha256 %s", arch, config, path, card.sha256[:12])
    return model


def _architecture_of(model: nn.Module) -> str:
    from virtime.models.flash import GigaTIMEFlash
    from virtime.models.gigatime import GigaTIME

    if isinstance(model, GigaTIME):
        return "gigatime"
    if isinstance(model, GigaTIMEFlash):
        return "gigatime-flash"
    raise CheckpointError(f"cannot save a {type(model).__name__}: not a virtime translator")


def save(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    card: ModelCard | None = None,
    **card_fields: Any,
) -> ModelCard:
    """Writes ``NAME.safetensors`` and its model card ``NAME.json``; returns the card.

    ``card_fields`` (``input_mpp``, ``window``, ``training`` ...) override those of ``card`` or of
    a fresh card; the sha256 is of the written weights file.
    """
    from safetensors.torch import save as st_save

    from virtime import __version__

    path = Path(path)
    if path.suffix != ".safetensors":
        path = path.with_suffix(".safetensors")
    arch = _architecture_of(model)
    if card is None:
        card = ModelCard(architecture=arch, config=model.config)  # type: ignore[arg-type]
    for key, value in card_fields.items():
        if not hasattr(card, key):
            raise TypeError(f"unknown model card field {key!r}")
        setattr(card, key, value)
    card.architecture = arch
    card.config = model.config  # type: ignore[assignment]
    card.virtime_version = __version__
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(path, st_save(tensors, metadata={"architecture": arch}))
    card.weights_file = path.name
    card.sha256 = sha256_file(path)
    card.save(card_path_for(path))
    return card


def save_official_layout(model: nn.Module, path: str | os.PathLike[str]) -> None:
    """Writes a plain ``torch.save`` state dict, the layout of the official ``model.pth``.

    GigaTIME-Flash tensors get the official (peft) names, e.g.
    ``encoder.base_model.model.blocks.0.attn.qkv.base_layer.weight``.
    """
    import io

    from virtime.models.flash import GigaTIMEFlash, official_key

    rename = official_key if isinstance(model, GigaTIMEFlash) else (lambda k: k)
    buf = io.BytesIO()
    torch.save({rename(k): v.detach().cpu() for k, v in model.state_dict().items()}, buf)
    atomic_write_bytes(Path(path), buf.getvalue())
