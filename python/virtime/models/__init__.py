"""Translator models: GigaTIME (UNet++), GigaTIME-Flash (ViT-S/16 + LoRA), checkpoints, demo.

``load(path)`` reads official ``.pth`` state dicts (safely, ``weights_only=True``) and virtime's
``.safetensors`` + model card; ``load_demo()`` gives the small offline demo model, which knows
only simulated tissue.
"""

from __future__ import annotations

from pathlib import Path

from virtime.models.card import ModelCard, confidence_tier, confidence_tiers
from virtime.models.checkpoints import load, read_state_dict, save, save_official_layout
from virtime.models.flash import GigaTIMEFlash
from virtime.models.gigatime import GIGATIME_FILTERS, GigaTIME
from virtime.models.preprocess import to_model_input
from virtime.models.registry import ARCHITECTURES, build_model, detect_architecture

__all__ = [
    "ARCHITECTURES",
    "DEMO_WEIGHTS",
    "GIGATIME_FILTERS",
    "GigaTIME",
    "GigaTIMEFlash",
    "ModelCard",
    "build_model",
    "confidence_tier",
    "confidence_tiers",
    "detect_architecture",
    "load",
    "load_demo",
    "read_state_dict",
    "save",
    "save_official_layout",
    "to_model_input",
]

#: The committed demo checkpoint (reduced-width GigaTIME trained on simulated tiles).
DEMO_WEIGHTS: Path = Path(__file__).resolve().parent.parent / "data" / "demo_gigatime.safetensors"


def load_demo(device: str = "cpu"):
    """The demo translator (simulated tissue only; real slides need the official weights)."""
    from virtime.errors import CheckpointError

    if not DEMO_WEIGHTS.is_file():
        raise CheckpointError(f"{DEMO_WEIGHTS}: demo checkpoint is missing from this install")
    return load(DEMO_WEIGHTS, device=device)
