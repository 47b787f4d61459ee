"""Covariate-adjusted tests of all features at once: logistic regression, a linear model on ranks.

With continuous covariates (age, cellularity, a background channel) strata are not enough, so the
attribute is regressed on the feature plus the covariates, one model per feature:

* binary attribute: logistic regression ``attribute ~ 1 + z(feature) + covariates``, fitted by
  Newton–Raphson for all features together (the Hessians are batched, m × p × p); the feature's
  Wald p and log odds ratio per SD are those of statsmodels' ``Logit`` on the same design.
* stage or a continuous attribute: ordinary least squares of the attribute's ranks on the
  feature's ranks plus the covariates (Frisch–Waugh–Lovell: both are residualised on the
  covariates once), t-test of the feature's coefficient as statsmodels' ``OLS``; the effect is
  the partial rank correlation.

Fits that do not converge, or whose coefficient runs off (complete separation), give NaN with a
note instead of numbers.
"""

from __future__ import annotations

import numpy as np
from scipy import special, stats

from virtime.stats.rank_tests import rank_columns

__all__ = ["MAX_LOG_OR_PER_SD", "logistic_feature_tests", "rank_linear_feature_tests"]

MAX_LOG_OR_PER_SD = 15.0  # beyond this the fit is separated, not estimated
_NOTE_SEPARATION = "logistic fit did not converge (separation?); p undefined"
_NOTE_EXPLAINED = "feature explained by the covariates; p undefined"


def _standardise(x: np.ndarray) -> np.ndarray:
    sd = x.std(axis=0, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(sd > 0, (x - x.mean(axis=0)) / sd, 0.0)


def logistic_feature_tests(x: np.ndarray, y: np.ndarray, covariates: np.ndarray, *,
                           max_iter: int = 50, tol: float = 1e-10
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Wald p, log OR per SD of each feature, and a note per column (empty when fitted).

    ``x``: n × m features (no NaN); ``y``: 0/1; ``covariates``: n × k design columns without an
    intercept (dummies of categorical covariates, continuous ones as they are).
    """
    n, m = x.shape
    xz = _standardise(x)
    a = np.column_stack([np.ones(n), covariates])  # n × q shared columns
    q = a.shape[1]
    beta_a = np.zeros((m, q))
    beta_x = np.zeros(m)
    y = np.asarray(y, dtype=float)
    converged = np.zeros(m, dtype=bool)
    cov_xx = np.full(m, np.nan)
    for _ in range(max_iter):
        eta = a @ beta_a.T + xz * beta_x
        mu = special.expit(eta)
        w = mu * (1.0 - mu)
        r = y[:, None] - mu
        grad = np.concatenate([(xz * r).sum(axis=0)[:, None], r.T @ a], axis=1)  # m × (1+q)
        h = np.empty((m, q + 1, q + 1))
        h[:, 0, 0] = (w * xz**2).sum(axis=0)
        h[:, 0, 1:] = (w * xz).T @ a
        h[:, 1:, 0] = h[:, 0, 1:]
        h[:, 1:, 1:] = np.einsum("nj,na,nb->jab", w, a, a, optimize=True)
        try:
            step = np.linalg.solve(h, grad[..., None])[..., 0]
        except np.linalg.LinAlgError:
            step = np.stack([np.linalg.lstsq(hj, gj, rcond=None)[0] for hj, gj in zip(h, grad)])
        step = np.where(converged[:, None], 0.0, step)
        beta_x = beta_x + step[:, 0]
        beta_a = beta_a + step[:, 1:]
        done = np.abs(step).max(axis=1) < tol * (1.0 + np.abs(beta_x))
        converged |= done
        if converged.all():
            eta = a @ beta_a.T + xz * beta_x
            mu = special.expit(eta)
            w = mu * (1.0 - mu)
            h[:, 0, 0] = (w * xz**2).sum(axis=0)
            h[:, 0, 1:] = (w * xz).T @ a
            h[:, 1:, 0] = h[:, 0, 1:]
            h[:, 1:, 1:] = np.einsum("nj,na,nb->jab", w, a, a, optimize=True)
            break
    with np.errstate(invalid="ignore", divide="ignore"):
        for j in range(m):
            try:
                cov_xx[j] = np.linalg.inv(h[j])[0, 0]
            except np.linalg.LinAlgError:
                cov_xx[j] = np.nan
        se = np.sqrt(cov_xx)
        p = 2.0 * special.ndtr(-np.abs(beta_x / se))
    bad = ~converged | (np.abs(beta_x) > MAX_LOG_OR_PER_SD) | ~np.isfinite(p)
    constant = np.all(xz == 0, axis=0)
    qmat, _ = np.linalg.qr(a)
    resid = xz - qmat @ (qmat.T @ xz)
    explained = ~constant & ((resid**2).sum(axis=0) <= 1e-10 * (n - 1))
    note = np.where(constant, "", np.where(explained, _NOTE_EXPLAINED,
                                           np.where(bad, _NOTE_SEPARATION, "")))
    bad |= explained
    p = np.where(bad | constant, np.nan, p)
    effect = np.where(bad | constant, np.nan, beta_x)
    return p, effect, note


def rank_linear_feature_tests(x: np.ndarray, y: np.ndarray, covariates: np.ndarray
                              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """t-test p, partial rank correlation, and a note per column, of OLS rank(y) ~ 1 + rank(x_j)
    + covariates. ``covariates`` as in :func:`logistic_feature_tests`."""
    n, m = x.shape
    ranks, _ = rank_columns(x)
    ry = rank_columns(np.asarray(y, dtype=float))[0][:, 0]
    a = np.column_stack([np.ones(n), covariates])
    qmat, _ = np.linalg.qr(a)
    ey = ry - qmat @ (qmat.T @ ry)
    ex = ranks - qmat @ (qmat.T @ ranks)
    sxx = (ex**2).sum(axis=0)
    syy = float(ey @ ey)
    sxy = ey @ ex
    dof = n - a.shape[1] - 1
    total = ((ranks - ranks.mean(axis=0)) ** 2).sum(axis=0)
    explained = sxx <= 1e-10 * np.maximum(total, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        beta = sxy / sxx
        rss = np.maximum(syy - beta * sxy, 0.0)
        se = np.sqrt(rss / dof / sxx)
        p = 2.0 * stats.t.sf(np.abs(beta / se), dof)
        effect = sxy / np.sqrt(sxx * syy)
    constant = total == 0
    bad = explained | (syy <= 0) | (dof <= 0)
    note = np.where(~constant & explained, _NOTE_EXPLAINED, "")
    return np.where(bad, np.nan, p), np.where(bad, np.nan, effect), note
