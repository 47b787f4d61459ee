"""INT8 translators: an OpenVINO IR made by ``virtime quantize``, refused unless its card passes.

An INT8 translator is three files: ``NAME.xml`` and ``NAME.bin`` (the quantized OpenVINO IR) and
the model card ``NAME.json``, whose ``quantization`` section records how it was calibrated and
how each channel agreed with the fp32 model on held-out tiles (Dice of the thresholded maps,
Pearson of the probabilities, slide-level density). :func:`load_int8` checks the files against
the card's hashes and the card's numbers against the accuracy gate, so an INT8 model that loses
science is not used by accident.

The default gate (:data:`DEFAULT_GATE`): every **protein** channel has Dice >= 0.95 and
|delta density| <= 0.005 (half a percentage point of positive tissue) on every calibration slide.
The background channels (TRITC, Cy5) are reported but not gated. The gate is this code's, not the
card's: a card cannot lower its own bar.

Dice is gated on rare channels too, although it moves with few pixels there: the demo translator's
INT8 model kept every common channel (Dice >= 0.95) and every density within 0.001, but its rare
channels (CD3, CD8, CD20, CD68 ... at <= 0.02 % density) fell to Dice 0-0.66, and the demo's
virtual recovery lost up to 0.17 power (benchmarks/RESULTS.md): a density bound alone would have
passed a model that loses the science. (That was with NNCF's default settings; ``virtime
quantize``'s defaults since, min/max activation ranges and the input block unquantized, keep those
channels at Dice >= 0.95.)
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from virtime.channels import PROTEIN_CHANNELS
from virtime.errors import CheckpointError
from virtime.models.card import ModelCard, sha256_file

__all__ = ["DEFAULT_GATE", "Int8Gate", "Int8Translator", "gate_failures", "int8_paths",
           "load_int8"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Int8Gate:
    """The accuracy an INT8 translator must keep against fp32 on every protein channel."""

    min_dice: float = 0.95
    max_density_delta: float = 0.005

    def describe(self) -> str:
        return (f"every protein channel Dice >= {self.min_dice:g} and |delta density| <= "
                f"{self.max_density_delta:g} vs fp32")


DEFAULT_GATE = Int8Gate()


def gate_failures(channels: dict[str, dict[str, Any]], gate: Int8Gate = DEFAULT_GATE) -> list[str]:
    """Short descriptions (``"CD8 Dice 0.91"``) of the protein channels that fail ``gate``.

    ``channels`` maps a channel name to its agreement numbers (``dice``, ``density_delta``: the
    largest absolute difference over slides), as the card stores them. A missing or non-finite
    number fails.
    """
    failures = []
    for name in PROTEIN_CHANNELS:
        m = channels.get(name)
        if m is None:
            failures.append(f"{name} not measured")
            continue
        dice, delta = m.get("dice"), m.get("density_delta")
        if not isinstance(dice, (int, float)) or not math.isfinite(dice) or dice < gate.min_dice:
            failures.append(f"{name} Dice {dice if dice is None else f'{dice:.3f}'}")
        if not isinstance(delta, (int, float)) or not math.isfinite(delta) or \
                abs(delta) > gate.max_density_delta:
            failures.append(f"{name} |delta density| "
                            f"{delta if delta is None else f'{abs(delta):.4f}'}")
    return failures


@dataclass
class Int8Translator:
    """A quantized translator: where its IR is and its card (``card.sha256``: the ``.bin``'s).

    Engines recognise it by ``ir_path``; only the OpenVINO backend at ``precision="int8"`` runs it.
    """

    ir_path: Path
    card: ModelCard

    @property
    def config(self) -> dict[str, Any]:
        return dict(self.card.config)


def int8_paths(path: str | os.PathLike[str]) -> tuple[Path, Path, Path]:
    """``(NAME.xml, NAME.bin, NAME.json)`` for ``NAME`` with or without the ``.xml``."""
    path = Path(path)
    xml = path if path.suffix == ".xml" else path.with_name(path.name + ".xml")
    return xml, xml.with_suffix(".bin"), xml.with_suffix(".json")


def load_int8(path: str | os.PathLike[str], *, accept_loss: bool = False,
              gate: Int8Gate = DEFAULT_GATE) -> Int8Translator:
    """The INT8 translator at ``path`` (its ``.xml``), checked against its card.

    Raises CheckpointError, one line naming the file, when the IR or its card is missing, the
    card is not an INT8 card, the files do not match the card's hashes, or (unless
    ``accept_loss``) the card's agreement numbers fail ``gate``; with ``accept_loss`` a failing
    gate is a warning.
    """
    xml, binary, card_file = int8_paths(path)
    for f in (xml, binary):
        if not f.is_file():
            raise CheckpointError(f"{f}: INT8 translator file not found (virtime quantize writes "
                                  f"NAME.xml, NAME.bin and the card NAME.json)")
    if not card_file.is_file():
        raise CheckpointError(f"{xml}: INT8 translator without its model card {card_file.name}: "
                              f"its accuracy against fp32 is unknown; make it with virtime "
                              f"quantize, which measures it")
    card = ModelCard.load(card_file)
    q = card.quantization
    if not q or not isinstance(q.get("channels"), dict):
        raise CheckpointError(f"{card_file}: not the card of an INT8 translator (no quantization "
                              f"section with per-channel agreement); make it with virtime quantize")
    if sha256_file(binary) != card.sha256 or sha256_file(xml) != q.get("xml_sha256"):
        raise CheckpointError(f"{xml}: the IR files do not match the sha256 in {card_file.name} "
                              f"(altered or from another quantization run)")
    failures = gate_failures(q["channels"], gate)
    if failures:
        shown = ", ".join(failures[:6]) + (f" (+{len(failures) - 6} more)" if len(failures) > 6
                                           else "")
        if not accept_loss:
            raise CheckpointError(f"{xml}: INT8 translator fails the accuracy gate "
                                  f"({gate.describe()}): {shown}; pass --accept-int8-loss to "
                                  f"use it anyway")
        logger.warning("%s: using an INT8 translator that fails the accuracy gate (%s): %s",
                       xml, gate.describe(), shown)
    logger.info("loaded INT8 translator %s (sha256 %s)", xml, card.sha256[:12])
    return Int8Translator(ir_path=xml, card=card)
