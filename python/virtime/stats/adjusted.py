"""The adjusted test of one block of features against one attribute, given the group's design.

Strata only (cancer type, subtype, site): the stratified rank test of
:mod:`virtime.stats.stratified` (van Elteren for a binary attribute, a stratified trend for stage,
a stratified Spearman for a continuous attribute). Any continuous covariate: the regressions of
:mod:`virtime.stats.regression`. When only one stratum carries information the adjusted test is
the unadjusted one on those patients, so "adjusted for a constant" changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from virtime.stats.covariates import Design
from virtime.stats.rank_tests import mannwhitney_from_ranks, rank_columns, spearman_from_ranks
from virtime.stats.regression import logistic_feature_tests, rank_linear_feature_tests
from virtime.stats.stratified import StratifiedRanks, stratified_rank_test

__all__ = ["REGRESSION_TEST", "STRATIFIED_TEST", "AdjustedBlock", "adjusted_block"]

STRATIFIED_TEST = {"binary": "van-elteren", "stage": "stratified-trend",
                   "continuous": "stratified-spearman"}
REGRESSION_TEST = {"binary": "logistic", "stage": "rank-linear", "continuous": "rank-linear"}


@dataclass(frozen=True)
class AdjustedBlock:
    """Adjusted n, effect, p and note per feature column of the block, and the test's name."""

    n: np.ndarray
    effect: np.ndarray
    p: np.ndarray
    note: np.ndarray
    test: str


def _nan_block(m: int, n: int, test: str, note: str) -> AdjustedBlock:
    nan = np.full(m, np.nan)
    return AdjustedBlock(np.full(m, n, dtype=np.int64), nan, nan.copy(),
                         np.full(m, note, dtype=object), test)


def _unadjusted(x: np.ndarray, y: np.ndarray, kind: str, exact_max_n: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """(effect, p) of the univariate test (Mann–Whitney or Spearman) on these patients."""
    ranks, tie = rank_columns(x)
    if kind == "binary":
        _, p, eff = mannwhitney_from_ranks(ranks, tie, y == 1, exact_max_n=exact_max_n)
        return eff, p
    return spearman_from_ranks(ranks, rank_columns(y)[0][:, 0])


def adjusted_block(x: np.ndarray, y: np.ndarray, kind: str, design: Design, *,
                   min_patients: int, min_per_class: int, exact_max_n: int,
                   ranked: Callable[[np.ndarray, np.ndarray], StratifiedRanks] | None = None
                   ) -> AdjustedBlock:
    """Adjusted statistics of the features ``x`` (rows: the block's patients) against ``y``.

    ``design`` holds the same rows. ``ranked(rows, strata)`` may return cached within-stratum
    ranks of ``x[rows]``. Too few usable patients or classes → NaN with a note.
    """
    m = x.shape[1]
    use = design.usable
    n_use = int(use.sum())
    regression = design.matrix is not None
    test = (REGRESSION_TEST if regression else STRATIFIED_TEST)[kind]
    if design.note:
        return _nan_block(m, n_use, test, design.note)
    xu, yu = x[use], y[use]
    if kind == "binary":
        n1 = int((yu == 1).sum())
        too_few = n_use < min_patients or min(n1, n_use - n1) < min_per_class
    else:
        too_few = n_use < min_patients or np.unique(yu).size < 2
    if too_few:
        return _nan_block(m, n_use, test, f"{n_use} patients with every covariate known; too few "
                                          "(or too few per class) for the adjusted test")
    if regression:
        if kind == "binary":
            p, eff, note = logistic_feature_tests(xu, yu, design.matrix[use])
        else:
            p, eff, note = rank_linear_feature_tests(xu, yu, design.matrix[use])
        return AdjustedBlock(np.full(m, n_use, dtype=np.int64), eff, p, note, test)
    strata = design.strata[use]
    sr = ranked(use, strata) if ranked is not None else StratifiedRanks.of(xu, strata)
    _, p, eff, n_used = stratified_rank_test(sr, yu, binary=kind == "binary")
    informative = _informative_strata(strata, yu)
    if informative.size == 1:  # one stratum carries all the information: the unadjusted test
        rows = strata == informative[0]
        eff, p = _unadjusted(xu[rows], yu[rows], kind, exact_max_n)
        n_used = int(rows.sum())
    left_out = n_use - n_used
    note = (f"{left_out} patient(s) in strata where the attribute does not vary left out"
            if left_out else "")
    return AdjustedBlock(np.full(m, n_used, dtype=np.int64), eff, p,
                         np.full(m, note, dtype=object), test)


def _informative_strata(strata: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Strata with ≥ 2 patients in which ``y`` takes ≥ 2 values."""
    codes, inv = np.unique(strata, return_inverse=True)
    count = np.bincount(inv)
    ymin = np.full(len(codes), np.inf)
    ymax = np.full(len(codes), -np.inf)
    np.minimum.at(ymin, inv, y)
    np.maximum.at(ymax, inv, y)
    return codes[(count >= 2) & (ymax > ymin)]
