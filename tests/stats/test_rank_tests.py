"""Vectorized rank tests against scipy and R's published wilcox.test example."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from virtime.stats.rank_tests import (
    kruskal_from_ranks,
    mannwhitney_from_ranks,
    mwu_exact_pvalue,
    rank_columns,
    spearman_from_ranks,
)


def test_r_wilcox_help_example_exact():
    # R ?wilcox.test, two-sample example (Hollander & Wolfe): p = 0.1272 one-sided ("greater"),
    # two-sided 0.2544122544.
    x = [0.80, 0.83, 1.89, 1.04, 1.45, 1.38, 1.91, 1.64, 0.73, 1.46]
    y = [1.15, 0.88, 0.90, 0.74, 1.21]
    ref = stats.mannwhitneyu(x, y, method="exact")
    assert ref.pvalue == pytest.approx(0.2544122544, abs=1e-10)
    data = np.array(x + y)[:, None]
    pos = np.r_[np.ones(10, bool), np.zeros(5, bool)]
    ranks, tie = rank_columns(data)
    u, p, r = mannwhitney_from_ranks(ranks, tie, pos)
    assert u[0] == 35.0
    assert p[0] == pytest.approx(0.2544122544, abs=1e-10)
    assert r[0] == pytest.approx(2 * 35 / 50 - 1)


def test_rank_columns_matches_scipy(rng):
    x = rng.integers(0, 6, size=(40, 7)).astype(float)
    ranks, tie = rank_columns(x)
    np.testing.assert_allclose(ranks, stats.rankdata(x, axis=0))
    for j in range(7):
        _, t = np.unique(x[:, j], return_counts=True)
        assert tie[j] == pytest.approx(float((t**3 - t).sum()))


@pytest.mark.parametrize("n1, n2", [(4, 5), (12, 9), (30, 40), (200, 150)])
def test_mann_whitney_matches_scipy(rng, n1, n2):
    x = rng.normal(size=(n1 + n2, 5))
    x[:, 3] = np.round(x[:, 3] * 2)  # ties → normal approximation with tie correction
    x[:n1, 0] += 0.8
    pos = np.r_[np.ones(n1, bool), np.zeros(n2, bool)]
    ranks, tie = rank_columns(x)
    u, p, _ = mannwhitney_from_ranks(ranks, tie, pos)
    for j in range(5):
        exact = n1 + n2 <= 50 and tie[j] == 0
        ref = stats.mannwhitneyu(x[pos, j], x[~pos, j],
                                 method="exact" if exact else "asymptotic")
        assert u[j] == ref.statistic
        assert p[j] == pytest.approx(ref.pvalue, rel=1e-9)


def test_exact_distribution_against_scipy(rng):
    for n1, n2 in [(1, 7), (6, 6), (8, 20), (25, 25)]:
        ours = mwu_exact_pvalue(np.arange(n1 * n2 + 1), n1, n2)
        np.testing.assert_allclose(ours, ours[::-1], rtol=1e-12)  # symmetric null
        for _ in range(3):
            x, y = rng.normal(size=n1) + 0.7, rng.normal(size=n2)
            ref = stats.mannwhitneyu(x, y, method="exact")
            assert mwu_exact_pvalue(np.array([ref.statistic]), n1, n2)[0] == pytest.approx(
                ref.pvalue, rel=1e-9)


def test_constant_column_gives_nan(rng):
    x = np.c_[rng.normal(size=30), np.ones(30)]
    pos = np.arange(30) < 12
    ranks, tie = rank_columns(x)
    _, p, r = mannwhitney_from_ranks(ranks, tie, pos)
    assert np.isfinite(p[0]) and np.isnan(p[1]) and np.isnan(r[1])


def test_spearman_and_kruskal_match_scipy(rng):
    x = rng.normal(size=(60, 4))
    y = rng.integers(0, 5, size=60).astype(float)
    x[:, 0] += 0.5 * y
    ranks, tie = rank_columns(x)
    rho, p = spearman_from_ranks(ranks, stats.rankdata(y))
    h, pk = kruskal_from_ranks(ranks, tie, y)
    for j in range(4):
        ref = stats.spearmanr(x[:, j], y)
        assert rho[j] == pytest.approx(ref.statistic, rel=1e-10)
        assert p[j] == pytest.approx(ref.pvalue, rel=1e-8)
        kref = stats.kruskal(*[x[y == k, j] for k in np.unique(y)])
        assert h[j] == pytest.approx(kref.statistic, rel=1e-10)
        assert pk[j] == pytest.approx(kref.pvalue, rel=1e-8)


def _exact_spearman_reference(x: np.ndarray, y: np.ndarray) -> float:
    """Two-sided permutation p by brute force: scipy's ρ over every ordering of y."""
    import itertools

    obs = abs(stats.spearmanr(x, y).statistic)
    rhos = np.array([stats.spearmanr(x, np.asarray(perm)).statistic
                     for perm in itertools.permutations(y)])
    return float(np.mean(np.abs(rhos) >= obs - 1e-12))


@pytest.mark.parametrize("n", [4, 6])
def test_spearman_small_n_exact_permutation_p(rng, n):
    # |ρ| = 1 at n = 4 used to give p = 0; the exact p is 2/4! = 1/12
    y = np.array([1.0, 2.0, 2.0, 3.0, 4.0, 4.0, 5.0])[:n]  # ties in y (stage-like)
    x = np.column_stack([np.arange(n, dtype=float), -np.arange(n, dtype=float),
                         rng.normal(size=n), np.r_[rng.normal(size=n - 1), 0.0]])
    x[-1, 3] = x[0, 3]  # a tied feature column
    ranks, _ = rank_columns(x)
    rho, p = spearman_from_ranks(ranks, stats.rankdata(y))
    for j in range(x.shape[1]):
        assert rho[j] == pytest.approx(stats.spearmanr(x[:, j], y).statistic, rel=1e-12)
        assert p[j] == pytest.approx(_exact_spearman_reference(x[:, j], y), rel=1e-12)
    assert np.all(p > 0)
    perfect = np.arange(4.0)
    r4, _ = rank_columns(perfect[:, None])
    _, p4 = spearman_from_ranks(r4, stats.rankdata(perfect))
    assert p4[0] == pytest.approx(2 / 24)


def test_spearman_perfect_rank_above_exact_range_is_not_zero():
    x = np.arange(12.0)[:, None]
    ranks, _ = rank_columns(x)
    rho, p = spearman_from_ranks(ranks, stats.rankdata(x[:, 0]))
    assert rho[0] == 1.0 and p[0] == pytest.approx(2 / 479001600)  # 2 / 12!
