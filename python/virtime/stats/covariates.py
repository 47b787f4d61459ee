"""Which covariates an adjusted analysis uses at each level, and their design within one group.

Defaults (``adjust="auto"``), chosen for the three confounders seen in GigaTIME's validations:

* pan-cancer: cancer type, because a biomarker frequent in one type otherwise "associates" with
  every channel that differs between types;
* cancer type: subtype, for the same reason one level down;
* subtype: nothing beyond the site;
* every level: the site (hospital) whenever the clinical table has a site column, because the site
  is predictable from image features and biases biomarker calls.

A categorical covariate becomes strata; a numeric one enters a regression (and the categorical
ones then enter as dummy columns). A covariate constant within a group does not enter there.
Patients missing a covariate are left out of the adjusted test and not counted in its ``n``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from virtime.errors import InvalidArgumentError
from virtime.stats.validation import SITE_COLUMNS, Cohort

__all__ = ["AUTO", "DEFAULT_BY_LEVEL", "NONE", "Design", "design_for_group",
           "parse_adjust", "resolve_covariates"]

AUTO, NONE = "auto", "none"
DEFAULT_BY_LEVEL = {"pan-cancer": ("cancer_type",), "cancer_type": ("subtype",), "subtype": ()}
#: Most parameters a regression may spend per patient (beyond it: per-test NaN with a note).
MIN_PATIENTS_PER_PARAMETER = 5


def parse_adjust(value: str | tuple[str, ...] | list[str] | None) -> str | tuple[str, ...]:
    """``"auto"``, ``"none"`` (also None or empty) or a tuple of column names (``"a,b"`` too)."""
    if value is None:
        return NONE
    if isinstance(value, str):
        v = value.strip()
        if v.lower() in (AUTO, NONE, ""):
            return v.lower() or NONE
        value = [c for c in v.split(",")]
    cols = tuple(c.strip() for c in value if c.strip())
    if not cols:
        return NONE
    return cols


def resolve_covariates(cohort: Cohort, adjust: str | tuple[str, ...], level: str
                       ) -> tuple[str, ...]:
    """The covariates requested at ``level``; an unknown or all-NaN column is one clear error."""
    if adjust == NONE:
        return ()
    if adjust == AUTO:
        site = cohort.site_column
        return DEFAULT_BY_LEVEL[level] + ((site,) if site else ())
    data = cohort.data
    missing = [c for c in adjust if c not in data.columns]
    if missing:
        have = [c for c in data.columns if c not in cohort.features][:12]
        raise InvalidArgumentError(
            f"covariate(s) {missing} not in the clinical or features table; have {have}")
    empty = [c for c in adjust if data[c].isna().all()]
    if empty:
        raise InvalidArgumentError(f"covariate(s) {empty} are missing (NaN) for every patient")
    return tuple(adjust)


def _is_categorical(col: pd.Series, name: str) -> bool:
    return (name in ("cancer_type", "subtype", *SITE_COLUMNS, "scanner", "batch")
            or not pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col))


@dataclass(frozen=True)
class Design:
    """The adjusted design of one group.

    ``usable``: patients with every covariate known; ``strata``: joint code of the categorical
    covariates (None without any); ``matrix``: continuous columns plus categorical dummies (None
    when only strata entered); ``continuous``: the continuous columns alone (None without any);
    ``entered``: covariates that vary in the group; ``note``: why the adjusted test is undefined
    for the whole group ("" when it is not).
    """

    usable: np.ndarray
    strata: np.ndarray | None
    matrix: np.ndarray | None
    entered: tuple[str, ...]
    note: str = ""
    continuous: np.ndarray | None = None

    def subset(self, rows: np.ndarray) -> Design:
        """The design of the patients ``rows`` (a boolean mask or indices) of the group."""
        def sub(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[rows]

        return Design(self.usable[rows], sub(self.strata), sub(self.matrix), self.entered,
                      self.note, sub(self.continuous))

    @property
    def active(self) -> bool:
        """Whether any covariate entered (else the adjusted test is the unadjusted one)."""
        return bool(self.entered)


def design_for_group(data: pd.DataFrame, covariates: tuple[str, ...]) -> Design:
    """The :class:`Design` of the patients in ``data`` (one group) for ``covariates``."""
    n = len(data)
    usable = np.ones(n, dtype=bool)
    cols = {}
    for c in covariates:
        col = data[c]
        known = col.notna().to_numpy()
        usable &= known
        cols[c] = col
    categorical, continuous = [], []
    for c, col in cols.items():
        vals = col[usable]
        if vals.nunique() < 2:
            continue  # constant within the group: nothing to adjust for
        (categorical if _is_categorical(col, c) else continuous).append(c)
    entered = tuple(c for c in covariates if c in categorical or c in continuous)
    if not entered:
        return Design(usable, None, None, ())
    strata = None
    if categorical:  # joint code of the categorical covariates (−1 where one is missing)
        joint = np.zeros(n, dtype=np.int64)
        for c in categorical:
            codes, uniques = pd.factorize(cols[c])
            joint = joint * (len(uniques) + 1) + (codes + 1)
        strata = pd.factorize(joint)[0]
    if not continuous:
        return Design(usable, strata, None, entered)
    parts = [cols[c].to_numpy(dtype=float)[:, None] for c in continuous]
    cont = np.concatenate(parts, axis=1)
    for c in categorical:
        codes, _ = pd.factorize(cols[c].where(usable))
        k = codes[usable].max() + 1
        dummies = np.zeros((n, max(k - 1, 0)))
        for lvl in range(1, k):
            dummies[:, lvl - 1] = codes == lvl
        parts.append(dummies)
    matrix = np.concatenate(parts, axis=1)
    sub = matrix[usable]
    centred = sub - sub.mean(axis=0)
    n_used = int(usable.sum())
    note = ""
    if matrix.shape[1] + 2 > n_used / MIN_PATIENTS_PER_PARAMETER:
        note = (f"too many covariate parameters ({matrix.shape[1]}) for {n_used} patients; "
                "adjusted p undefined")
    elif np.linalg.matrix_rank(np.column_stack([np.ones(n_used), centred])) < matrix.shape[1] + 1:
        note = f"covariates {', '.join(entered)} are collinear; adjusted p undefined"
    return Design(usable, strata, matrix, entered, note, cont)
