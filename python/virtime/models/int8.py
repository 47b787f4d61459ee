"""INT8 translators: an OpenVINO IR made by ``virtime quantize``, refused unless its card passes.

An INT8 translator is three files: ``NAME.xml`` and ``NAME.bin`` (the quantized OpenVINO IR) and
the model card ``NAME.json``, whose ``quantization`` section records how it was calibrated and
how each channel agreed with the fp32 model on held-out tiles (Dice of the thresholded maps,
Pearson of the probabilities, slide-level density). :func:`load_int8` checks the files against
the card's hashes and the card's numbers against the accuracy gate, so an INT8 model that loses
science is not used by accident.

The default gate (:data:`DEFAULT_GATE`): every **protein** channel has |delta density| <= 0.005
(half a percentage point of positive tissue) on every calibration slide, and Dice >= 0.95 unless
the channel is too rare to gate by Dice. The background channels (TRITC, Cy5) are reported but not
gated. The gate is this code's, not the card's: a card cannot lower its own bar.

**Too rare to gate by Dice**: fewer than ``min_positive_pixels`` (150) positive held-out pixels
under fp32 *and* under INT8. Dice counts pixels at the threshold, so on a channel with a few dozen
positive pixels a handful of them flipping moves it by 0.1-0.2 with no change to the science: the
demo translator's Actin-D (8-19 positive pixels of 2.1 M) scored Dice 0.76-0.88 on two calibration
draws with Pearson 0.997 and |delta density| 1e-5. Why 150, measured (benchmarks/RESULTS.md): on
random draws of held-out windows of INT8 models whose Dice is 0.97 on 132 windows, Dice from few
pixels is both biased low (mean 0.87 at 10-30 px, 0.94 at 30-75, 0.96 at 75-125, within 0.006 of
the large-count value from 125 px) and noisy (sd about 0.25/sqrt(px), 0.02 at 150 px: under half
the gate's margin 1 - 0.95); a model that loses the channels (Dice 0.3-0.6) fails in every draw
at every count. 150 px is also about one lymphocyte (7 um across) at 0.5 um/px: below it there
is not one cell of that marker in the held-out tissue. A rare channel stays under the density
bound, its Pearson is reported, and the card (``too_rare_for_dice``) and the quantize output name
it with its pixel count.

Dice is gated on rare-but-present channels: the demo translator's INT8 model made with NNCF's
default settings kept every common channel (Dice >= 0.95) and every density within 0.001, but its
rare channels (CD3, CD8, CD20, CD68 ... at <= 0.02 % density, 158-1500 positive pixels) fell to
Dice 0-0.66, and the demo's virtual recovery lost up to 0.17 power (benchmarks/RESULTS.md): a
density bound alone would have passed a model that loses the science. (``virtime quantize``'s
defaults since, min/max activation ranges and the input block unquantized, keep those channels
at Dice >= 0.95.)
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

__all__ = ["DEFAULT_GATE", "Int8Gate", "Int8Translator", "describe_dice_gating", "gate_failures",
           "int8_paths", "load_int8", "positive_pixels", "too_rare_for_dice"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Int8Gate:
    """The accuracy an INT8 translator must keep against fp32 on every protein channel.

    ``min_positive_pixels``: Dice is gated on a channel only where fp32 or INT8 calls at least
    this many held-out pixels positive (see the module docstring for why 150).
    """

    min_dice: float = 0.95
    max_density_delta: float = 0.005
    min_positive_pixels: int = 150

    def describe(self) -> str:
        return (f"every protein channel |delta density| <= {self.max_density_delta:g} and Dice "
                f">= {self.min_dice:g} vs fp32, Dice where fp32 or INT8 has >= "
                f"{self.min_positive_pixels} positive held-out pixels")


DEFAULT_GATE = Int8Gate()


def positive_pixels(metrics: dict[str, Any]) -> int | None:
    """The larger of a channel's fp32 and INT8 positive held-out pixel counts, as the card
    stores them (``positive_pixels_fp32``/``positive_pixels_int8``); None when the card has no
    count (cards written before the counts: Dice is then always gated)."""
    counts = [metrics.get(k) for k in ("positive_pixels_fp32", "positive_pixels_int8")]
    counts = [int(c) for c in counts if isinstance(c, (int, float)) and math.isfinite(c)]
    return max(counts) if counts else None


def too_rare_for_dice(channels: dict[str, dict[str, Any]], gate: Int8Gate = DEFAULT_GATE
                      ) -> dict[str, int]:
    """The protein channels ``gate`` does not hold to Dice, with their positive pixel count:
    fewer than ``gate.min_positive_pixels`` positive held-out pixels under fp32 and INT8."""
    out = {}
    for name in PROTEIN_CHANNELS:
        n = positive_pixels(channels.get(name) or {})
        if n is not None and n < gate.min_positive_pixels:
            out[name] = n
    return out


def gate_failures(channels: dict[str, dict[str, Any]], gate: Int8Gate = DEFAULT_GATE) -> list[str]:
    """Short descriptions (``"CD8 Dice 0.91"``) of the protein channels that fail ``gate``.

    ``channels`` maps a channel name to its agreement numbers (``dice``, ``density_delta``: the
    largest absolute difference over slides, ``positive_pixels_fp32``/``_int8``), as the card
    stores them. Dice is not held on channels :func:`too_rare_for_dice`; the density bound
    holds everywhere. A missing or non-finite number that is held fails.
    """
    rare = too_rare_for_dice(channels, gate)
    failures = []
    for name in PROTEIN_CHANNELS:
        m = channels.get(name)
        if m is None:
            failures.append(f"{name} not measured")
            continue
        dice, delta = m.get("dice"), m.get("density_delta")
        if name not in rare and (not isinstance(dice, (int, float)) or not math.isfinite(dice)
                                 or dice < gate.min_dice):
            failures.append(f"{name} Dice {dice if dice is None else f'{dice:.3f}'}")
        if not isinstance(delta, (int, float)) or not math.isfinite(delta) or \
                abs(delta) > gate.max_density_delta:
            failures.append(f"{name} |delta density| "
                            f"{delta if delta is None else f'{abs(delta):.4f}'}")
    return failures


def describe_dice_gating(channels: dict[str, dict[str, Any]], gate: Int8Gate = DEFAULT_GATE
                         ) -> str:
    """One line: how many protein channels the gate held to Dice, and which were too rare
    (``"Dice gated on 20 protein channels; too rare to gate by Dice: Actin-D (19 px)"``)."""
    rare = too_rare_for_dice(channels, gate)
    gated = len(PROTEIN_CHANNELS) - len(rare)
    text = f"Dice gated on {gated} protein channel{'s' * (gated != 1)}"
    if rare:
        text += (f"; too rare to gate by Dice (< {gate.min_positive_pixels} positive held-out "
                 f"pixels): " + ", ".join(f"{k} ({v} px)" for k, v in rare.items()))
    return text


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
    logger.info("loaded INT8 translator %s (sha256 %s; %s)", xml, card.sha256[:12],
                describe_dice_gating(q["channels"], gate))
    return Int8Translator(ir_path=xml, card=card)
