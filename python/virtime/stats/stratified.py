"""Stratified rank tests for all features at once: van Elteren (binary) and a stratified trend.

Both are one statistic, a stratified linear rank statistic. Within each stratum s (a cancer type, a
site, or their combination) features are ranked, and the centred ranks are summed against the
attribute's centred within-stratum scores (a 0/1 indicator for a binary attribute, which gives
U_s − n1·n2/2; the attribute's ranks for stage or a continuous attribute, which gives the
Spearman covariance). Each stratum is weighted by 1/(n_s + 1), van Elteren's locally most powerful
weights for a common shift, and

    Z = Σ w_s T_s / sqrt(Σ w_s² Var0(T_s)),   Var0(T_s) = S_xx,s · S_yy,s / (n_s − 1),

with S_xx the tie-corrected sum of squared centred ranks. For a binary attribute Var0 is exactly the
Mann–Whitney variance, so Z is van Elteren's statistic (Lehmann, *Nonparametrics*, 1975, §3.3). A
stratum in which the attribute does not vary carries no information and its patients do not count
in ``n``. Everything is a matrix product over the features, so adjusting costs about as much as
ranking the features once more.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special

from virtime.stats.rank_tests import rank_columns

__all__ = ["StratifiedRanks", "stratified_rank_test"]


@dataclass(frozen=True)
class StratifiedRanks:
    """Features ranked within strata: centred ranks (n × m), and per stratum its size and each
    column's S_xx = (n_s³ − n_s − Σ(t³ − t)) / 12."""

    centred: np.ndarray
    stratum: np.ndarray  # stratum index 0…S−1 per row
    sizes: np.ndarray  # (S,)
    sxx: np.ndarray  # (S, m)

    @classmethod
    def of(cls, x: np.ndarray, strata: np.ndarray) -> StratifiedRanks:
        """Ranks every column of ``x`` (n × m, no NaN) within each stratum code of ``strata``."""
        codes, stratum = np.unique(np.asarray(strata), return_inverse=True)
        n, m = x.shape
        centred = np.empty((n, m))
        sizes = np.bincount(stratum, minlength=len(codes)).astype(float)
        sxx = np.zeros((len(codes), m))
        order = np.argsort(stratum, kind="stable")
        bounds = np.searchsorted(stratum[order], np.arange(len(codes) + 1))
        for s in range(len(codes)):
            rows = order[bounds[s]:bounds[s + 1]]
            ranks, tie = rank_columns(x[rows])
            ns = len(rows)
            centred[rows] = ranks - (ns + 1) / 2.0
            sxx[s] = (ns**3 - ns - tie) / 12.0
        return cls(centred, stratum, sizes, sxx)


def _scores(y: np.ndarray, stratum: np.ndarray, n_strata: int, binary: bool) -> np.ndarray:
    """The attribute's centred within-stratum scores: indicator or average ranks."""
    if binary:
        score = (y == 1).astype(float)
    else:
        score = np.empty(len(y))
        for s in range(n_strata):
            rows = np.flatnonzero(stratum == s)
            score[rows] = rank_columns(y[rows])[0][:, 0]
    means = np.bincount(stratum, weights=score, minlength=n_strata) / np.maximum(
        np.bincount(stratum, minlength=n_strata), 1)
    return score - means[stratum]


def stratified_rank_test(ranked: StratifiedRanks, y: np.ndarray, *, binary: bool
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Z, two-sided normal p and a stratified effect for every column, and the patients that count.

    ``y`` holds the attribute of the rows of ``ranked`` (0/1 when ``binary``). Effect: binary, the
    weighted rank-biserial Σ w T / Σ w n1·n2/2 (+1: positives rank above negatives in every
    stratum); otherwise the weighted Spearman Σ w T / Σ w sqrt(S_xx S_yy). With one stratum both
    are the unstratified rank-biserial r and Spearman ρ. NaN where no stratum is informative.
    """
    y = np.asarray(y, dtype=float)
    st, sizes = ranked.stratum, ranked.sizes
    n_strata = len(sizes)
    yc = _scores(y, st, n_strata, binary)
    syy = np.bincount(st, weights=yc**2, minlength=n_strata)
    informative = (syy > 1e-12) & (sizes >= 2)
    w = np.where(informative, 1.0 / (sizes + 1.0), 0.0)
    t = (w[st] * yc) @ ranked.centred  # Σ_s w_s T_s for every column
    with np.errstate(divide="ignore", invalid="ignore"):
        var_s = np.where(informative, syy / np.maximum(sizes - 1.0, 1.0), 0.0)
        var = (w**2 * var_s) @ ranked.sxx
        z = t / np.sqrt(var)
        p = np.where(var > 0, 2.0 * special.ndtr(-np.abs(z)), np.nan)
        if binary:
            n1 = np.bincount(st, weights=(y == 1).astype(float), minlength=n_strata)
            scale = np.sum(w * n1 * (sizes - n1) / 2.0)
            effect = np.where(var > 0, t / scale, np.nan)
        else:
            effect = np.where(var > 0, t / ((w * np.sqrt(syy)) @ np.sqrt(ranked.sxx)), np.nan)
    n_used = int(sizes[informative].sum())
    return np.where(var > 0, z, np.nan), p, effect, n_used
