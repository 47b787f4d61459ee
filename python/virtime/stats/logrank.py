"""The k-group log-rank test, validated and vectorized, and the median/tertile split of a covariate.

lifelines' ``logrank_test`` silently returns a p-value for NaN durations or events coded 1/2, and
it costs ~0.2 s per call in pandas overhead (minutes for 21 channels × 25 groups). This version
validates durations and events first and computes observed − expected and the hypergeometric
covariance at all event times at once; the tests check it against lifelines and R's survdiff.
Cox fits live in :mod:`virtime.stats.cox`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from virtime.errors import InputDataError
from virtime.stats.validation import validate_survival

__all__ = ["LogrankResult", "logrank", "split_groups"]


@dataclass(frozen=True)
class LogrankResult:
    """Log-rank χ², its degrees of freedom and p, and the group sizes/events."""

    chi2: float
    df: int
    p: float
    sizes: dict[str, int]
    events: dict[str, int]


def split_groups(x: np.ndarray, how: str = "median") -> np.ndarray:
    """Labels ``low``/``high`` (above the median) or ``T1``/``T2``/``T3`` (tertiles) for ``x``."""
    x = np.asarray(x, dtype=float)
    if how == "median":
        return np.where(x > np.median(x), "high", "low")
    if how == "tertiles":
        c1, c2 = np.quantile(x, [1 / 3, 2 / 3])
        return np.where(x <= c1, "T1", np.where(x <= c2, "T2", "T3"))
    raise InputDataError(f"unknown split {how!r}; use median or tertiles")


def logrank(time: np.ndarray, event: np.ndarray, groups: np.ndarray) -> LogrankResult:
    """Log-rank test across ``groups`` (2 or more labels) after validating durations/events.

    χ² = (O − E)ᵀ V⁻ (O − E) over the first k − 1 groups, V the hypergeometric covariance summed
    over distinct event times; df = k − 1 (R's ``survdiff``).
    """
    time, event, groups = np.asarray(time, float), np.asarray(event, float), np.asarray(groups)
    validate_survival(time, event, "log-rank input")
    labels, g = np.unique(groups, return_inverse=True)
    k = len(labels)
    if k < 2:
        raise InputDataError(f"log-rank needs at least two groups; got {list(labels)}")
    order = np.argsort(time, kind="stable")
    t, e, g = time[order], event[order], g[order]
    _, first = np.unique(t, return_index=True)
    n = len(t)
    onehot = np.zeros((n, k))
    onehot[np.arange(n), g] = 1.0
    # at risk at each distinct time: everyone from its first index on
    at_risk_g = np.cumsum(onehot[::-1], axis=0)[::-1][first]  # (T, k)
    deaths_g = np.add.reduceat(onehot * e[:, None], first, axis=0)  # (T, k)
    n_t = at_risk_g.sum(axis=1)
    d_t = deaths_g.sum(axis=1)
    keep = d_t > 0
    at_risk_g, deaths_g, n_t, d_t = at_risk_g[keep], deaths_g[keep], n_t[keep], d_t[keep]
    frac = at_risk_g / n_t[:, None]
    o_minus_e = (deaths_g - d_t[:, None] * frac).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        c = np.where(n_t > 1, d_t * (n_t - d_t) / (n_t - 1), 0.0)
    v = np.einsum("t,ti,ij->ij", c, frac, np.eye(k)) - np.einsum("t,ti,tj->ij", c, frac, frac)
    diff = o_minus_e[:-1]
    chi2 = float(diff @ np.linalg.pinv(v[:-1, :-1]) @ diff)
    p = float(stats.chi2.sf(chi2, k - 1))
    sizes = {str(lab): int((groups == lab).sum()) for lab in labels}
    events = {str(lab): int(event[groups == lab].sum()) for lab in labels}
    return LogrankResult(chi2, k - 1, p, sizes, events)
