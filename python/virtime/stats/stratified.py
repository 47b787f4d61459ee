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

__all__ = ["StratifiedRanks", "rank_within_strata", "stratified_rank_test"]


def rank_within_strata(x: np.ndarray, stratum: np.ndarray, n_strata: int
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Average ranks (1-based) of every column of ``x`` (n × m) within each stratum (codes
    0…n_strata−1), and Σ(t³ − t) of each column's ties per stratum (n_strata × m).

    Two stable argsorts of the whole matrix (by value, then by stratum) order every column by
    (stratum, value); strata then occupy the same rows in every column, so positions within a
    stratum and tie groups come out of one pass, for all strata and columns at once.
    """
    x = np.asarray(x, dtype=float)
    n, m = x.shape
    xt = np.ascontiguousarray(x.T)
    by_value = np.argsort(xt, axis=1, kind="stable")
    by_stratum = np.argsort(stratum[by_value], axis=1, kind="stable")
    order = np.take_along_axis(by_value, by_stratum, axis=1)
    v = np.take_along_axis(xt, order, axis=1)
    sizes = np.bincount(stratum, minlength=n_strata)
    st_sorted = np.repeat(np.arange(n_strata), sizes)  # the same in every column
    pos = np.arange(n) - np.repeat(np.cumsum(sizes) - sizes, sizes)  # 0-based within stratum
    start = np.ones((m, n), dtype=bool)
    start[:, 1:] = (v[:, 1:] != v[:, :-1]) | (st_sorted[1:] != st_sorted[:-1])
    flat = start.ravel()
    gid = np.cumsum(flat) - 1
    counts = np.bincount(gid).astype(float)
    first = np.flatnonzero(flat)
    avg = pos[first % n] + (counts + 1.0) / 2.0
    ranks_t = np.empty((m, n))
    ranks_t[np.repeat(np.arange(m), n), order.ravel()] = avg[gid]
    cell = (first // n) * n_strata + st_sorted[first % n]
    tie = np.bincount(cell, weights=counts**3 - counts, minlength=m * n_strata)
    return ranks_t.T, tie.reshape(m, n_strata).T


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
        ranks, tie = rank_within_strata(x, stratum, len(codes))
        sizes = np.bincount(stratum, minlength=len(codes)).astype(float)
        centred = ranks - ((sizes + 1.0) / 2.0)[stratum][:, None]
        sxx = (sizes**3 - sizes)[:, None] / 12.0 - tie / 12.0
        return cls(centred, stratum, sizes, sxx)


def _scores(y: np.ndarray, stratum: np.ndarray, n_strata: int, binary: bool) -> np.ndarray:
    """The attribute's centred within-stratum scores: indicator or average ranks."""
    if binary:
        score = (y == 1).astype(float)
    else:
        score = rank_within_strata(y[:, None], stratum, n_strata)[0][:, 0]
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
