"""Vectorized rank tests: Mann–Whitney U, Spearman and Kruskal–Wallis for many features at once.

A population run tests ~230 features × 20 attributes in hundreds of groups; calling scipy per
test is far too slow. We rank all feature columns of a group once (average ranks plus the tie
term Σ(t³ − t) per column) and derive every statistic from those ranks. Large samples use the
normal approximation with tie and continuity correction (as scipy's ``method="asymptotic"``);
small tie-free samples use the exact null distribution of U, computed once per (n1, n2). The tests
compare each function with scipy on small data.
"""

from __future__ import annotations

import itertools
from functools import lru_cache

import numpy as np
from scipy import special, stats

__all__ = [
    "kruskal_from_ranks",
    "mannwhitney_from_ranks",
    "mwu_exact_pvalue",
    "rank_columns",
    "spearman_exact_pvalue",
    "spearman_from_ranks",
]

EXACT_MAX_N = 50  # exact MWU up to n1 + n2 = 50 (counts ≤ C(50, 25) ≈ 1.3e14 fit in int64)
#: Spearman p by full enumeration of the n! permutations up to this n (9! = 362,880), as R's
#: ``cor.test`` does (AS 89); above it the t approximation, floored at the smallest attainable p.
SPEARMAN_EXACT_MAX_N = 9
_PERM_CHUNK = 40_000


def rank_columns(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Average ranks (1-based) of each column of ``x`` (n × m) and each column's Σ(t³ − t).

    One argsort for the whole matrix; tie groups found from the sorted values.
    """
    x = np.asarray(x, dtype=float)
    if x.ndim == 1:
        x = x[:, None]
    n, m = x.shape
    if n == 0:
        return np.empty((0, m)), np.zeros(m)
    xt = np.ascontiguousarray(x.T)  # m × n: each row one feature
    order = np.argsort(xt, axis=1, kind="stable")
    s = np.take_along_axis(xt, order, axis=1)
    start = np.ones((m, n), dtype=bool)
    start[:, 1:] = s[:, 1:] != s[:, :-1]
    gid = np.cumsum(start.ravel()) - 1  # global tie-group id, row-major
    counts = np.bincount(gid).astype(float)
    first = np.flatnonzero(start.ravel()) % n  # 0-based position of each group's first element
    avg = first + (counts + 1.0) / 2.0
    ranks_t = np.empty((m, n))
    rows = np.repeat(np.arange(m), n)
    ranks_t[rows, order.ravel()] = avg[gid]
    group_row = np.flatnonzero(start.ravel()) // n
    tie = np.bincount(group_row, weights=counts**3 - counts, minlength=m)
    return ranks_t.T, tie


@lru_cache(maxsize=4096)
def _mwu_tails(n1: int, n2: int) -> tuple[np.ndarray, np.ndarray]:
    """(P(U ≤ u), P(U ≥ u)) for u = 0 … n1·n2 under H0 without ties (Gaussian binomials)."""
    k, big = min(n1, n2), max(n1, n2)
    size = n1 * n2 + 1
    poly = np.zeros(size + big + k + 1, dtype=np.int64)
    poly[0] = 1
    # Π_{i=1..k} (1 − q^{big+i}) / (1 − q^i): multiply by the numerator, divide by the denominator.
    for i in range(1, k + 1):
        shift = big + i
        poly[shift:] -= poly[:-shift].copy()
        for r in range(i):  # division by (1 − q^i): b[j] = a[j] + b[j − i]
            poly[r::i] = np.cumsum(poly[r::i])
    freq = poly[:size].astype(float)
    total = freq.sum()
    return np.cumsum(freq) / total, np.cumsum(freq[::-1])[::-1] / total


def mwu_exact_pvalue(u1: np.ndarray, n1: int, n2: int) -> np.ndarray:
    """Two-sided exact p for U1 (no ties): 2·min(P(U ≤ u), P(U ≥ u)), clipped to 1."""
    cdf, sf = _mwu_tails(n1, n2)
    u = np.rint(np.asarray(u1, dtype=float)).astype(int)
    lower, upper = cdf[u], sf[u]
    return np.minimum(2.0 * np.minimum(lower, upper), 1.0)


def mannwhitney_from_ranks(
    ranks: np.ndarray, tie: np.ndarray, positive: np.ndarray, *, exact_max_n: int = EXACT_MAX_N
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """U of the positive class, two-sided p and rank-biserial r for every column.

    ``ranks``/``tie`` from :func:`rank_columns` on exactly the rows of ``positive`` (boolean).
    r = 2·U1/(n1·n2) − 1: +1 when every positive sample ranks above every negative one. p is NaN
    for a constant column (no information) or an empty class.
    """
    pos = np.asarray(positive, dtype=bool)
    n = pos.size
    n1 = int(pos.sum())
    n2 = n - n1
    m = ranks.shape[1]
    if n1 == 0 or n2 == 0:
        nan = np.full(m, np.nan)
        return nan, nan.copy(), nan.copy()
    r1 = pos.astype(float) @ ranks
    u1 = r1 - n1 * (n1 + 1) / 2.0
    mu = n1 * n2 / 2.0
    var = n1 * n2 / 12.0 * ((n + 1) - tie / (n * (n - 1)))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (np.abs(u1 - mu) - 0.5) / np.sqrt(var)
        p = np.where(var > 0, 2.0 * special.ndtr(-z), np.nan)
    p = np.minimum(p, 1.0)
    if n <= exact_max_n:
        no_ties = (tie == 0) & (var > 0)
        if no_ties.any():
            p[no_ties] = mwu_exact_pvalue(u1[no_ties], n1, n2)
    effect = np.where(var > 0, 2.0 * u1 / (n1 * n2) - 1.0, np.nan)
    return u1, p, effect


@lru_cache(maxsize=16)
def _permutations(n: int) -> np.ndarray:
    """All n! permutations of range(n) as an (n!, n) int8 array (n ≤ SPEARMAN_EXACT_MAX_N)."""
    return np.array(list(itertools.permutations(range(n))), dtype=np.int8)


def spearman_exact_pvalue(ranks: np.ndarray, y_ranks: np.ndarray) -> np.ndarray:
    """Two-sided permutation p of Spearman's ρ for every column, by enumerating all n! orders.

    Exact under H0 (every pairing of the two rankings equally likely), ties included: the
    statistic Σ (r_x − r̄_x)(r_y − r̄_y) of each permuted ``y`` is compared with the observed one;
    p = share of permutations at least as extreme. NaN where a column or ``y`` is constant.
    """
    n, m = ranks.shape
    xc = ranks - ranks.mean(axis=0)
    yc = np.asarray(y_ranks, dtype=float) - np.mean(y_ranks)
    obs = np.abs(yc @ xc)
    tol = 1e-9 * np.maximum(obs, 1.0)
    perms = _permutations(n)
    hits = np.zeros(m)
    for start in range(0, len(perms), _PERM_CHUNK):
        stat = yc[perms[start:start + _PERM_CHUNK]] @ xc
        hits += (np.abs(stat) >= obs - tol).sum(axis=0)
    p = hits / len(perms)
    constant = ((xc**2).sum(axis=0) == 0) | ((yc**2).sum() == 0)
    return np.where(constant, np.nan, p)


def spearman_from_ranks(
    ranks: np.ndarray, y_ranks: np.ndarray, *, exact_max_n: int = SPEARMAN_EXACT_MAX_N
) -> tuple[np.ndarray, np.ndarray]:
    """Spearman ρ of every column with ``y`` (already ranked) and its two-sided p.

    n ≤ ``exact_max_n``: the exact permutation p (:func:`spearman_exact_pvalue`); larger n:
    scipy's t approximation, which gives p = 0 at |ρ| = 1, so it is floored at 2/n!, the
    smallest p any pairing can reach. NaN where a column or ``y`` is constant.
    """
    n = ranks.shape[0]
    xc = ranks - ranks.mean(axis=0)
    yc = np.asarray(y_ranks, dtype=float) - np.mean(y_ranks)
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = (yc @ xc) / np.sqrt((xc**2).sum(axis=0) * (yc**2).sum())
        rho = np.clip(rho, -1.0, 1.0)
        dof = n - 2
        t = rho * np.sqrt(dof / ((1.0 - rho) * (1.0 + rho)))
        p = 2.0 * stats.t.sf(np.abs(t), dof) if dof > 0 else np.full_like(rho, np.nan)
    if 2 <= n <= exact_max_n:
        p = spearman_exact_pvalue(ranks, y_ranks)
    else:
        p = np.maximum(p, np.exp(np.log(2.0) - special.gammaln(n + 1)))
    p = np.where(np.isfinite(rho), np.minimum(p, 1.0), np.nan)
    return rho, p


def kruskal_from_ranks(
    ranks: np.ndarray, tie: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Kruskal–Wallis H (tie-corrected) and χ² p of every column across the groups in ``labels``."""
    labels = np.asarray(labels)
    n = ranks.shape[0]
    uniq, inv = np.unique(labels, return_inverse=True)
    k = len(uniq)
    if k < 2:
        nan = np.full(ranks.shape[1], np.nan)
        return nan, nan.copy()
    onehot = np.zeros((k, n))
    onehot[inv, np.arange(n)] = 1.0
    sums = onehot @ ranks
    sizes = onehot.sum(axis=1)[:, None]
    h = 12.0 / (n * (n + 1)) * (sums**2 / sizes).sum(axis=0) - 3.0 * (n + 1)
    corr = 1.0 - tie / (n**3 - n)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = np.where(corr > 0, h / corr, np.nan)
    p = stats.chi2.sf(h, k - 1)
    return h, p
