"""Multiple-testing correction against the Benjamini–Hochberg (1995) example and statsmodels."""

from __future__ import annotations

import numpy as np
import pytest
from statsmodels.stats.multitest import multipletests

from virtime.errors import InvalidArgumentError
from virtime.stats import adjust_by_family, adjust_pvalues

# Benjamini & Hochberg (1995), JRSS-B 57:289, section 4: 15 p-values, 4 rejections at 0.05.
BH_P = np.array([0.0001, 0.0004, 0.0019, 0.0095, 0.0201, 0.0278, 0.0298, 0.0344, 0.0459,
                 0.3240, 0.4262, 0.5719, 0.6528, 0.7590, 1.000])


def test_bh_published_example():
    q = adjust_pvalues(BH_P, "bh")
    assert int((q <= 0.05).sum()) == 4
    np.testing.assert_allclose(q[:5], [0.0015, 0.003, 0.0095, 0.035625, 0.0603], rtol=1e-12)


@pytest.mark.parametrize("ours, theirs", [("bh", "fdr_bh"), ("holm", "holm"),
                                          ("bonferroni", "bonferroni")])
def test_matches_statsmodels_on_shuffled_input(rng, ours, theirs):
    p = rng.uniform(size=200) ** 3
    np.testing.assert_allclose(adjust_pvalues(p, ours), multipletests(p, method=theirs)[1],
                               rtol=1e-12)


def test_nan_is_excluded_not_contagious(rng):
    p = rng.uniform(size=50) ** 2
    p_nan = p.copy()
    p_nan[[3, 17]] = np.nan
    q = adjust_pvalues(p_nan, "bh")
    assert np.isnan(q[[3, 17]]).all()
    keep = ~np.isnan(p_nan)
    # R's p.adjust semantics: the family is the 48 non-NaN tests
    np.testing.assert_allclose(q[keep], multipletests(p_nan[keep], method="fdr_bh")[1])
    # the statsmodels pitfall this guards against
    assert np.isnan(multipletests(p_nan, method="fdr_bh")[1]).all()


def test_all_nan_family_and_by_family(rng):
    assert np.isnan(adjust_pvalues(np.array([np.nan, np.nan]))).all()
    p = rng.uniform(size=30)
    fam = np.repeat(["a", "b", "c"], 10)
    q = adjust_by_family(p, fam)
    for f in "abc":
        np.testing.assert_allclose(q[fam == f], multipletests(p[fam == f], method="fdr_bh")[1])


def test_unknown_method():
    with pytest.raises(InvalidArgumentError, match="unknown multiple-testing method"):
        adjust_pvalues(BH_P, "fdr_by")
