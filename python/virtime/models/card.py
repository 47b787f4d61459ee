"""The model card: a JSON file beside each virtime checkpoint that says what the weights are.

It records everything a downstream stage needs to use the weights correctly (architecture and
its config, channel order, input microns per pixel, window, normalization) and what is known about
their quality (training data summary, per-channel evaluation Pearson and confidence tiers), and
the sha256 of the weights file so tables can cite the exact model.

Confidence tiers follow the per-channel Pearson of the GigaTIME evaluation protocol:
``high`` if r >= 0.5, ``medium`` if 0.3 <= r < 0.5, ``low`` if r < 0.3, ``unknown`` if not
evaluated. (On the paper's public tiles DAPI 0.70 and CK 0.53 would be high; Actin-D, CD20,
Tryptase and Transgelin at 0.11-0.15 low.)
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from virtime.channels import CHANNEL_NAMES
from virtime.errors import CheckpointError
from virtime.io import atomic_write_bytes

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "TIER_CUTOFFS",
    "ModelCard",
    "confidence_tier",
    "confidence_tiers",
    "sha256_file",
]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

#: Lower Pearson bounds of the ``high`` and ``medium`` tiers.
TIER_CUTOFFS: dict[str, float] = {"high": 0.5, "medium": 0.3}

CARD_FORMAT = 1


def confidence_tier(pearson: float | None) -> str:
    """``high`` / ``medium`` / ``low`` from a channel's evaluation Pearson; ``unknown`` if NaN."""
    if pearson is None or not math.isfinite(pearson):
        return "unknown"
    if pearson >= TIER_CUTOFFS["high"]:
        return "high"
    if pearson >= TIER_CUTOFFS["medium"]:
        return "medium"
    return "low"


def confidence_tiers(pearson: dict[str, float]) -> dict[str, str]:
    """Tier of every channel in ``pearson`` (channel name -> r)."""
    return {name: confidence_tier(r) for name, r in pearson.items()}


@dataclass
class ModelCard:
    """Metadata of one checkpoint (serialised as JSON beside the weights)."""

    architecture: str
    config: dict[str, Any]
    channels: list[str] = field(default_factory=lambda: list(CHANNEL_NAMES))
    input_mpp: float = 0.25
    window: int = 256
    normalization: dict[str, list[float]] = field(
        default_factory=lambda: {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    )
    training: dict[str, Any] = field(default_factory=dict)
    evaluation: dict[str, Any] = field(default_factory=dict)
    confidence_tiers: dict[str, str] = field(default_factory=dict)
    tier_cutoffs: dict[str, float] = field(default_factory=lambda: dict(TIER_CUTOFFS))
    #: INT8 translators only (``virtime quantize``): how they were calibrated and how each
    #: channel agrees with fp32 on held-out tiles (:mod:`virtime.models.int8`).
    quantization: dict[str, Any] = field(default_factory=dict)
    virtime_version: str = ""
    weights_file: str = ""
    sha256: str = ""
    format: int = CARD_FORMAT

    def with_evaluation(self, pearson: dict[str, float], **extra: Any) -> ModelCard:
        """This card with per-channel Pearson stored and tiers derived from it."""
        clean = {k: (float(v) if v is not None and math.isfinite(v) else None)
                 for k, v in pearson.items()}
        self.evaluation = {"pearson": clean, **extra}
        self.confidence_tiers = confidence_tiers(
            {k: (v if v is not None else float("nan")) for k, v in clean.items()}
        )
        return self

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=False, allow_nan=False)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Writes the card atomically."""
        atomic_write_bytes(Path(path), (self.to_json() + "\n").encode())

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<dict>") -> ModelCard:
        known = {f for f in cls.__dataclass_fields__}
        if "architecture" not in data or "config" not in data:
            raise CheckpointError(f"{source}: model card lacks 'architecture' or 'config'")
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ModelCard:
        """Reads a card; CheckpointError naming the file if it is not valid JSON."""
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{path}: cannot read model card ({exc})") from exc
        if not isinstance(data, dict):
            raise CheckpointError(f"{path}: model card is not a JSON object")
        return cls.from_dict(data, str(path))


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()

