"""Site-aware validation: can the features tell the hospitals apart, and does the signature
survive when whole sites are held out?

In TCGA the site of origin is predictable from image features (70–86 % accuracy), and a
classifier validated across patients of the same sites looks better than one validated on a site
it never saw. When the clinical table has a site column, three checks:

* :func:`site_predictability` — cross-validated balanced accuracy of predicting the site from the
  features (standardized, multinomial logistic regression, stratified k-fold). Chance is
  1 / number of sites; above ``chance + SITE_WARNING_MARGIN`` (0.2) a warning says that
  site-related signal is strong enough to confound associations — adjust for site
  (``associate --adjust site``) and read the leave-one-site-out numbers.
* :func:`site_signature` — the out-of-fold survival signature scored with k-fold and with
  leave-one-site-out folds, and k-fold on features with site (and any other covariates)
  partialled out; each with its log-rank p, Harrell's C and the C within sites (pairs of
  patients of one site only: a score that only knows the site ranks no better than chance there).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from virtime.errors import InputDataError, StatisticalWarning
from virtime.stats.signature import signature_risk
from virtime.stats.validation import SITE_COLUMNS, Cohort

__all__ = [
    "SITE_WARNING_MARGIN",
    "SitePredictability",
    "find_site_column",
    "partial_out",
    "site_predictability",
    "site_signature",
]

log = logging.getLogger(__name__)

#: Balanced accuracy above chance + this margin triggers the site warning.
SITE_WARNING_MARGIN = 0.2


def find_site_column(cohort: Cohort) -> str | None:
    """The first site column (``site``, ``hospital``, ``centre``, ``center``, ``tss``) of the
    cohort with at least two sites, else None."""
    for col in SITE_COLUMNS:
        if col in cohort.data.columns and cohort.data[col].dropna().nunique() >= 2:
            return col
    return None


@dataclass(frozen=True)
class SitePredictability:
    """Cross-validated balanced accuracy of predicting the site from the features."""

    site_column: str
    balanced_accuracy: float
    chance: float
    n: int
    n_sites: int
    folds: int
    left_out: int

    @property
    def threshold(self) -> float:
        """Chance + :data:`SITE_WARNING_MARGIN`: above it, site is a likely confounder."""
        return self.chance + SITE_WARNING_MARGIN

    @property
    def warn(self) -> bool:
        return bool(self.balanced_accuracy > self.threshold)

    @property
    def message(self) -> str:
        verdict = (f"above {self.threshold:.2f} (chance + {SITE_WARNING_MARGIN}): the features "
                   "carry site; adjust for site and read leave-one-site-out results"
                   if self.warn else f"within chance + {SITE_WARNING_MARGIN}")
        return (f"site ({self.site_column}) predictable from the features with balanced accuracy "
                f"{self.balanced_accuracy:.2f} ({self.n_sites} sites, chance "
                f"{self.chance:.2f}, {self.folds}-fold, {self.n} patients): {verdict}")


def _site_labels(cohort: Cohort, site: str | None) -> tuple[str, pd.Series]:
    col = site or find_site_column(cohort)
    if col is None:
        raise InputDataError("no site column with at least two sites in the clinical table "
                             f"(looked for {', '.join(SITE_COLUMNS)})")
    if col not in cohort.data.columns:
        raise InputDataError(f"site column {col!r} not in the clinical table")
    return col, cohort.data[col].astype("string")


def site_predictability(cohort: Cohort, *, site: str | None = None,
                        features: list[str] | None = None, folds: int = 5, seed: int = 0,
                        warn: bool = True) -> SitePredictability:
    """How well the features predict the site (cross-validated balanced accuracy).

    Patients without a site or with a NaN feature are left out (``left_out``); sites with fewer
    patients than folds lower the number of folds (at least 2). Warns (StatisticalWarning) above
    ``chance + SITE_WARNING_MARGIN`` unless ``warn=False``.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    col, labels = _site_labels(cohort, site)
    feats = list(features or cohort.features)
    x = cohort.data[feats].to_numpy(float)
    ok = np.isfinite(x).all(axis=1) & labels.notna().to_numpy()
    x, y = x[ok], labels[ok].astype(str).to_numpy()
    sites, counts = np.unique(y, return_counts=True)
    k = int(min(folds, counts.min())) if len(sites) else 0
    if len(sites) < 2 or k < 2:
        raise InputDataError(f"site prediction needs ≥ 2 sites with ≥ 2 patients each "
                             f"({dict(zip(sites, counts))})")
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    pred = cross_val_predict(model, x, y, cv=StratifiedKFold(k, shuffle=True, random_state=seed))
    res = SitePredictability(col, float(balanced_accuracy_score(y, pred)), 1.0 / len(sites),
                             int(ok.sum()), len(sites), k, int((~ok).sum()))
    log.info(res.message)
    if warn and res.warn:
        warnings.warn(res.message, StatisticalWarning, stacklevel=2)
    return res


def partial_out(x: np.ndarray, covariates: pd.DataFrame) -> np.ndarray:
    """Residuals of each column of ``x`` after least squares on the covariates (categorical
    columns as indicators, numeric as is, with an intercept)."""
    parts = [np.ones((len(x), 1))]
    for col in covariates.columns:
        v = covariates[col]
        if pd.api.types.is_numeric_dtype(v):
            parts.append(v.to_numpy(float)[:, None])
        else:
            parts.append(pd.get_dummies(v.astype(str), drop_first=True, dtype=float).to_numpy())
    design = np.hstack(parts)
    beta, *_ = np.linalg.lstsq(design, x, rcond=None)
    return x - design @ beta


def _harrell_c(time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> float:
    from lifelines.utils import concordance_index

    if event.sum() < 1 or np.ptp(risk) == 0:
        return float("nan")
    return float(concordance_index(time, -risk, event))


def _within_site_c(time, event, risk, sites) -> float:
    """Harrell's C over pairs of patients of the same site (per-site C weighted by patients)."""
    total, weight = 0.0, 0
    for s in np.unique(sites):
        m = sites == s
        c = _harrell_c(time[m], event[m], risk[m]) if m.sum() >= 3 else float("nan")
        if np.isfinite(c):
            total += c * m.sum()
            weight += int(m.sum())
    return total / weight if weight else float("nan")


def site_signature(cohort: Cohort, *, site: str | None = None,
                   features: list[str] | None = None, covariates: tuple[str, ...] = (),
                   folds: int = 5, penalizer: float = 0.1, seed: int = 0) -> pd.DataFrame:
    """The out-of-fold signature three ways: ``k-fold``, ``leave-one-site-out`` and ``k-fold,
    adjusted`` (features with site and ``covariates`` partialled out).

    One row each: folds, n, events, log-rank χ² and p, Harrell's C (``c_index``) and the C within
    sites (``c_within_site``), and ``status``. Patients without survival, site or a feature value
    are left out (``n`` counts who entered).
    """
    if not cohort.has_survival:
        raise InputDataError("clinical table has no os_time/os_event columns")
    col, labels = _site_labels(cohort, site)
    feats = list(features or [f for f in cohort.features if f.endswith(".density")
                              and not any(op in f for op in "|&")] or cohort.features)
    missing = [c for c in covariates if c not in cohort.data.columns]
    if missing:
        raise InputDataError(f"covariate column(s) {missing} not in the clinical table")
    d = cohort.data
    x = d[feats].to_numpy(float)
    cov = d[[col, *[c for c in covariates if c != col]]]
    ok = (np.isfinite(x).all(axis=1) & labels.notna().to_numpy() & d["os_time"].notna().to_numpy()
          & cov.notna().all(axis=1).to_numpy())
    t, e = d["os_time"].to_numpy(float)[ok], d["os_event"].to_numpy(float)[ok]
    x, sites, cov = x[ok], labels[ok].astype(str).to_numpy(), cov[ok].reset_index(drop=True)
    loso = [np.flatnonzero(sites == s) for s in np.unique(sites)]
    runs = [("k-fold", x, None), ("leave-one-site-out", x, loso),
            (f"k-fold, adjusted for {', '.join(cov.columns)}", partial_out(x, cov), None)]
    rows = []
    for name, xx, splits in runs:
        row = {"validation": name, "folds": len(splits) if splits else folds, "n": int(len(t)),
               "events": int(e.sum())}
        sig = signature_risk(t, e, xx, folds=folds, penalizer=penalizer, seed=seed,
                             splits=splits)
        m = sig.scored
        row.update(n=int(m.sum()), events=int(e[m].sum()),
                   status="; ".join(sig.failed_folds) or "ok")
        if sig.logrank is not None:
            row.update(logrank_chi2=sig.logrank.chi2, logrank_p=sig.logrank.p)
        if m.sum() >= 3:
            row.update(c_index=_harrell_c(t[m], e[m], sig.risk[m]),
                       c_within_site=_within_site_c(t[m], e[m], sig.risk[m], sites[m]))
        rows.append(row)
    return pd.DataFrame(rows).reindex(columns=["validation", "folds", "n", "events",
                                                "logrank_chi2", "logrank_p", "c_index",
                                                "c_within_site", "status"])
