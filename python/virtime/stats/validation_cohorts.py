"""Cross-cohort validation: do two cohorts agree on subtype-level activations and associations?

Two checks from the paper's external validation. (1) Spearman correlation of subtype-level mean
activation per channel between cohorts, over subtypes present in both — per channel and pooled
over all channel × subtype dots; with few subtypes the t approximation of scipy is wrong, so the p
is exact (all permutations, n ≤ 8) or from a seeded permutation test (n < 30). (2) Fisher's exact
test (one-sided, enrichment) on the overlap of significant (level, group, feature, attribute)
tests among those tested in both cohorts, plus each cohort's count of significant associations.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from virtime.errors import InputDataError
from virtime.stats.associations import AssociationResult
from virtime.stats.validation import Cohort

__all__ = ["CrossCohortResult", "cross_cohort_validation", "spearman_small_sample"]

EXACT_MAX_N = 8
PERMUTATION_MAX_N = 30
_KEYS = ["level", "group", "feature", "attribute"]


def spearman_small_sample(x: np.ndarray, y: np.ndarray, *, n_permutations: int = 9999,
                          seed: int = 0) -> tuple[float, float, str]:
    """Spearman ρ and a two-sided p that is valid for few points: (rho, p, method).

    Exact over all n! orderings for n ≤ 8, a permutation test for n < 30 (p = (1 + #)/(1 + B)),
    scipy's t approximation beyond.
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    n = len(x)
    if n < 3:
        return np.nan, np.nan, "too few points"
    rx, ry = stats.rankdata(x), stats.rankdata(y)
    if np.ptp(rx) == 0 or np.ptp(ry) == 0:
        return np.nan, np.nan, "constant"
    rho = float(stats.pearsonr(rx, ry).statistic)
    if n >= PERMUTATION_MAX_N:
        return rho, float(stats.spearmanr(x, y).pvalue), "t-approximation"
    xc = (rx - rx.mean()) / np.sqrt(((rx - rx.mean()) ** 2).sum())
    yc = ry - ry.mean()
    yc = yc / np.sqrt((yc**2).sum())
    if n <= EXACT_MAX_N:
        perms = np.array(list(itertools.permutations(range(n))))
        null = yc[perms] @ xc
        method = "exact"
        p = float(np.mean(np.abs(null) >= abs(rho) - 1e-12))
    else:
        rng = np.random.default_rng(seed)
        perms = rng.permuted(np.tile(np.arange(n), (n_permutations, 1)), axis=1)
        null = yc[perms] @ xc
        method = "permutation"
        p = float((1 + np.sum(np.abs(null) >= abs(rho) - 1e-12)) / (1 + n_permutations))
    return rho, p, method


@dataclass
class CrossCohortResult:
    """Agreement between cohorts A and B.

    ``summary``: one row per statistic (pooled Spearman, Fisher overlap, counts);
    ``per_channel``: Spearman per feature over shared subtypes; ``points``: subtype means (one
    row per feature × subtype, for the scatter plot); ``overlap``: every (level, group, feature,
    attribute) tested in both with its significance in A and B.
    """

    summary: pd.DataFrame
    per_channel: pd.DataFrame
    points: pd.DataFrame
    overlap: pd.DataFrame
    contingency: pd.DataFrame


def _subtype_means(cohort: Cohort, feats: list[str], min_patients: int) -> pd.DataFrame:
    g = cohort.data.groupby("subtype")
    means = g[feats].mean()
    sizes = g.size()
    return means[sizes >= min_patients].assign(n=sizes[sizes >= min_patients])


def cross_cohort_validation(
    cohort_a: Cohort,
    cohort_b: Cohort,
    assoc_a: AssociationResult | None = None,
    assoc_b: AssociationResult | None = None,
    *,
    features: list[str] | None = None,
    min_patients: int = 5,
    alpha: float = 0.05,
    n_permutations: int = 9999,
    seed: int = 0,
) -> CrossCohortResult:
    """Compares two cohorts (A: e.g. the real-world cohort, B: e.g. TCGA).

    ``features`` default to the ``*.density`` channel features both cohorts share; subtypes need
    ``min_patients`` in each cohort. The association overlap needs both ``assoc_a`` and
    ``assoc_b`` (from :func:`virtime.stats.associate`); without them only activations compare.
    """
    if features is None:
        features = [f for f in cohort_a.features if f in cohort_b.features
                    and f.endswith(".density") and not any(op in f for op in "|&")]
    if not features:
        raise InputDataError("the two cohorts share no '<channel>.density' feature")
    ma = _subtype_means(cohort_a, features, min_patients)
    mb = _subtype_means(cohort_b, features, min_patients)
    shared = sorted(set(ma.index) & set(mb.index))
    rows = []
    pts = []
    for f in features:
        a, b = ma.loc[shared, f].to_numpy(), mb.loc[shared, f].to_numpy()
        ok = np.isfinite(a) & np.isfinite(b)  # a feature undefined on a whole subtype
        rho, p, method = spearman_small_sample(a[ok], b[ok], n_permutations=n_permutations,
                                               seed=seed)
        rows.append(dict(feature=f, n_subtypes=len(shared), rho=rho, p=p, method=method))
        pts.append(pd.DataFrame({"feature": f, "subtype": shared, "mean_a": a, "mean_b": b,
                                 "n_a": ma.loc[shared, "n"].to_numpy(),
                                 "n_b": mb.loc[shared, "n"].to_numpy()}))
    per_channel = pd.DataFrame(rows)
    points = pd.concat(pts, ignore_index=True).dropna(subset=["mean_a", "mean_b"])
    summary_rows = []
    if len(points) >= 3:
        rho, p, method = spearman_small_sample(points["mean_a"], points["mean_b"],
                                               n_permutations=n_permutations, seed=seed)
        summary_rows.append(dict(statistic="spearman_subtype_means", value=rho, p=p,
                                 detail=f"{len(points)} channel×subtype points over "
                                        f"{len(shared)} shared subtypes ({method})"))
    overlap = pd.DataFrame(columns=[*_KEYS, "q_a", "q_b", "sig_a", "sig_b"])
    table = pd.DataFrame()
    if assoc_a is not None and assoc_b is not None:
        sa = assoc_a.summary[_KEYS + ["q"]].dropna(subset=["q"])
        sb = assoc_b.summary[_KEYS + ["q"]].dropna(subset=["q"])
        sa = sa.astype({k: str for k in _KEYS})
        sb = sb.astype({k: str for k in _KEYS})
        overlap = sa.merge(sb, on=_KEYS, suffixes=("_a", "_b"))
        overlap["sig_a"] = overlap["q_a"] < alpha
        overlap["sig_b"] = overlap["q_b"] < alpha
        both = int((overlap.sig_a & overlap.sig_b).sum())
        a_only = int((overlap.sig_a & ~overlap.sig_b).sum())
        b_only = int((~overlap.sig_a & overlap.sig_b).sum())
        neither = int((~overlap.sig_a & ~overlap.sig_b).sum())
        table = pd.DataFrame([[both, a_only], [b_only, neither]],
                             index=["sig in B", "not sig in B"], columns=["sig in A", "not sig in A"])
        if len(overlap):
            res = stats.fisher_exact([[both, a_only], [b_only, neither]], alternative="greater")
            summary_rows.append(dict(statistic="fisher_overlap", value=float(res.statistic),
                                     p=float(res.pvalue),
                                     detail=f"{both} significant in both of {len(overlap)} "
                                            "tests shared (odds ratio; one-sided)"))
        summary_rows += [
            dict(statistic="significant_a", value=float((assoc_a.summary.q < alpha).sum()),
                 p=np.nan, detail=f"q < {alpha}, all tests of cohort A"),
            dict(statistic="significant_b", value=float((assoc_b.summary.q < alpha).sum()),
                 p=np.nan, detail=f"q < {alpha}, all tests of cohort B"),
            dict(statistic="significant_shared_a", value=float(both + a_only), p=np.nan,
                 detail="among tests run in both cohorts"),
            dict(statistic="significant_shared_b", value=float(both + b_only), p=np.nan,
                 detail="among tests run in both cohorts"),
        ]
    return CrossCohortResult(pd.DataFrame(summary_rows, columns=["statistic", "value", "p",
                                                                 "detail"]),
                             per_channel, points, overlap.reset_index(drop=True), table)
