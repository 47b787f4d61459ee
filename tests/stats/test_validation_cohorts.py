"""Cross-cohort validation: small-sample Spearman p, pooled agreement, Fisher overlap."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats

from virtime.stats import associate, cross_cohort_validation, join_features
from virtime.stats.validation_cohorts import spearman_small_sample


def test_exact_spearman_against_brute_force(rng):
    x, y = rng.normal(size=6), rng.normal(size=6)
    y = y + x
    rho, p, method = spearman_small_sample(x, y)
    obs = stats.spearmanr(x, y).statistic
    null = [stats.spearmanr(x, y[list(perm)]).statistic for perm in itertools.permutations(range(6))]
    assert method == "exact"
    assert rho == pytest.approx(obs)
    assert p == pytest.approx(np.mean(np.abs(null) >= abs(obs) - 1e-12), rel=1e-12)
    # n = 5, perfectly concordant: only the identity and its reversal reach |ρ| = 1 → 2/120
    assert spearman_small_sample(np.arange(5), np.arange(5) ** 2)[1] == pytest.approx(2 / 120)


def test_permutation_p_close_to_t_approximation(rng):
    x = rng.normal(size=25)
    y = 0.5 * x + rng.normal(size=25)
    _, p, method = spearman_small_sample(x, y, n_permutations=19999)
    assert method == "permutation"
    assert p == pytest.approx(stats.spearmanr(x, y).pvalue, abs=0.02)


def _two_cohorts(rng, factory, plant):
    fa, ca = factory(rng, per_subtype=80, plant=plant)
    fb, cb = factory(rng, per_subtype=50, plant=plant)
    # subtype-level activation that both cohorts share (the biology), plus cohort noise
    level = {st: rng.normal(size=fa.shape[1] - 2) for st in ca["subtype"].unique()}
    for f, c in ((fa, ca), (fb, cb)):
        shift = np.stack([level[s] for s in c["subtype"]])
        f.iloc[:, 2:] += 2 * shift
    # B lacks one subtype entirely
    keep = cb["subtype"] != "CSCC"
    return (join_features(fa, ca), join_features(fb[keep.to_numpy()], cb[keep]))


def test_cohorts_agree(rng, cohort_factory):
    a, b = _two_cohorts(rng, cohort_factory, ("CD8.density", "KRAS", "LUAD", 1.5))
    ra = associate(a, levels=("pan-cancer", "subtype"))
    rb = associate(b, levels=("pan-cancer", "subtype"))
    res = cross_cohort_validation(a, b, ra, rb)
    s = res.summary.set_index("statistic")
    assert s.loc["spearman_subtype_means", "value"] > 0.9
    assert s.loc["spearman_subtype_means", "p"] < 1e-10
    assert set(res.points.subtype) == {"LUAD", "LUSC", "COAD", "READ", "IDC", "ILC", "SKCM"}
    assert (res.per_channel.n_subtypes == 7).all()
    assert (res.per_channel.method == "exact").all() and (res.per_channel.rho > 0.5).mean() > 0.8
    assert s.loc["significant_a", "value"] == (ra.summary.q < 0.05).sum()
    both = res.overlap[res.overlap.sig_a & res.overlap.sig_b]
    assert ("LUAD", "CD8.density", "KRAS") in set(zip(both.group, both.feature, both.attribute))
    assert s.loc["fisher_overlap", "p"] < 0.01
    # the overlap covers only tests run in both cohorts: no CSCC rows
    assert "CSCC" not in set(res.overlap.group)
    ref = stats.fisher_exact(res.contingency.to_numpy(), alternative="greater")
    assert s.loc["fisher_overlap", "p"] == pytest.approx(ref.pvalue)


def test_unrelated_cohorts_do_not_agree(rng, cohort_factory):
    fa, ca = cohort_factory(rng, per_subtype=40)
    fb, cb = cohort_factory(rng, per_subtype=40)
    res = cross_cohort_validation(join_features(fa, ca), join_features(fb, cb))
    s = res.summary.set_index("statistic")
    assert abs(s.loc["spearman_subtype_means", "value"]) < 0.3
    assert "fisher_overlap" not in s.index
