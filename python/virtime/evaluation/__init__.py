"""Scoring a translator against paired mIF: the GigaTIME per-channel box-sum Pearson."""

from __future__ import annotations

from virtime.evaluation.evaluate import (
    EvaluationResult,
    evaluate,
    predict_probs,
    prevalence,
    write_report,
)
from virtime.evaluation.metrics import EvalAccumulator, box_sums, tile_pearson

__all__ = [
    "EvalAccumulator",
    "EvaluationResult",
    "box_sums",
    "evaluate",
    "predict_probs",
    "prevalence",
    "tile_pearson",
    "write_report",
]
