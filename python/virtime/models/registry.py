"""Architectures by name, and recognising an architecture from a state dict's keys and shapes.

A checkpoint is identified by what it contains rather than by its file name: UNet++ nodes
(``conv0_0.conv1.weight`` ... ``final.weight``) mean GigaTIME, whose widths are read from the
weight shapes; a ViT encoder (``encoder.patch_embed.proj.weight`` in any layout the official
notebook loads) means GigaTIME-Flash, whose decoder (``decoder4..1``, ``skip1..3``,
``final_conv``) must be there too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from virtime.errors import CheckpointError

__all__ = ["ARCHITECTURES", "build_model", "detect_architecture", "strip_module_prefix"]

ARCHITECTURES: tuple[str, ...] = ("gigatime", "gigatime-flash")


def build_model(architecture: str, config: Mapping[str, Any] | None = None) -> nn.Module:
    """A fresh model of ``architecture`` built with ``config`` (constructor keyword arguments)."""
    config = dict(config or {})
    if architecture == "gigatime":
        from virtime.models.gigatime import GigaTIME

        return GigaTIME(**config)
    if architecture == "gigatime-flash":
        from virtime.models.flash import GigaTIMEFlash

        return GigaTIMEFlash(**config)
    raise CheckpointError(f"unknown architecture {architecture!r}; known: {', '.join(ARCHITECTURES)}")


def strip_module_prefix(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drops a ``module.`` prefix (checkpoints saved from ``DataParallel``) from every key."""
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


def detect_architecture(state: Mapping[str, torch.Tensor]) -> tuple[str, dict[str, Any]]:
    """``(architecture, config)`` recognised from a state dict; CheckpointError if neither fits."""
    state = strip_module_prefix(state)
    if "conv0_0.conv1.weight" in state and "final.weight" in state:
        filters = []
        i = 0
        while f"conv{i}_0.conv1.weight" in state:
            filters.append(int(state[f"conv{i}_0.conv1.weight"].shape[0]))
            i += 1
        return "gigatime", {
            "in_channels": int(state["conv0_0.conv1.weight"].shape[1]),
            "num_classes": int(state["final.weight"].shape[0]),
            "filters": filters,
        }
    from virtime.models.flash import flash_config_from_state, is_flash_state

    if is_flash_state(state):
        return "gigatime-flash", flash_config_from_state(state)
    sample = ", ".join(list(state)[:6])
    raise CheckpointError(
        f"state dict matches no known architecture ({', '.join(ARCHITECTURES)}); first keys: "
        f"{sample or '(none)'}"
    )
