"""Linear probes: how well does a feature set predict a binary clinical attribute?

A standardized L2 logistic regression is fitted in stratified K-fold cross-validation; every
slide gets an out-of-fold probability, and the AUROC of those is reported with a DeLong
confidence interval (DeLong et al. 1988, in the fast midrank form of Sun & Xu 2014). This is the
paper's mutation-prediction task in miniature: slide embeddings, virtual-mIF features, and both.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from virtime.errors import InputDataError, InvalidArgumentError

__all__ = ["ProbeResult", "delong_auc_ci", "embedding_frame", "fit_probe", "probe"]

logger = logging.getLogger(__name__)


def _midranks(x: np.ndarray) -> np.ndarray:
    return stats.rankdata(x, method="average")


def delong_auc_ci(
    y: np.ndarray, score: np.ndarray, alpha: float = 0.05
) -> tuple[float, float, float, float]:
    """``(auc, se, low, high)``: AUROC and its DeLong standard error and normal-theory CI.

    The CI is clipped to [0, 1]. Needs at least two positives and two negatives.
    """
    y = np.asarray(y).astype(bool)
    score = np.asarray(score, dtype=np.float64)
    pos, neg = score[y], score[~y]
    m, n = len(pos), len(neg)
    if m < 2 or n < 2:
        raise InputDataError(f"DeLong needs >= 2 of each class, got {m} positive, {n} negative")
    tx, ty, tz = _midranks(pos), _midranks(neg), _midranks(np.concatenate([pos, neg]))
    auc = (tz[:m].sum() - m * (m + 1) / 2) / (m * n)
    v10 = (tz[:m] - tx) / n  # structural components of the positives
    v01 = 1.0 - (tz[m:] - ty) / m  # and of the negatives
    var = v10.var(ddof=1) / m + v01.var(ddof=1) / n
    se = float(np.sqrt(max(var, 0.0)))
    z = stats.norm.ppf(1 - alpha / 2)
    return float(auc), se, float(max(0.0, auc - z * se)), float(min(1.0, auc + z * se))


def fit_probe(
    x: np.ndarray, y: np.ndarray, *, n_splits: int = 5, c: float = 1.0, seed: int = 0
) -> np.ndarray:
    """Out-of-fold positive-class probabilities of a standardized logistic regression."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    oof = np.empty(len(y), dtype=np.float64)
    folds = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    for train, test in folds.split(x, y):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000))
        model.fit(x[train], y[train])
        oof[test] = model.predict_proba(x[test])[:, 1]
    return oof


@dataclass
class ProbeResult:
    """Per feature set: AUROC of out-of-fold predictions, DeLong SE and CI."""

    summary: pd.DataFrame
    oof: dict[str, np.ndarray] = field(default_factory=dict)
    labels: np.ndarray | None = None


def _as_frame(name: str, data: pd.DataFrame | np.ndarray, index: pd.Index) -> pd.DataFrame:
    if isinstance(data, pd.DataFrame):
        frame = data.select_dtypes(include=[np.number])
        dropped = [c for c in data.columns if c not in frame.columns]
        if dropped:
            logger.info("probe %s: ignoring non-numeric columns %s", name, dropped[:5])
        missing = index.difference(frame.index)
        if len(missing):
            raise InputDataError(f"feature set {name!r} lacks rows for {len(missing)} samples, "
                                 f"e.g. {list(missing[:3])}")
        frame = frame.loc[index]
    else:
        arr = np.asarray(data, dtype=np.float64)
        if arr.ndim != 2 or len(arr) != len(index):
            raise InputDataError(f"feature set {name!r} must be (n_samples={len(index)}, "
                                 f"n_features), got {arr.shape}")
        frame = pd.DataFrame(arr, index=index)
    if frame.shape[1] == 0:
        raise InputDataError(f"feature set {name!r} has no numeric columns")
    if not np.isfinite(frame.to_numpy(dtype=np.float64)).all():
        raise InputDataError(f"feature set {name!r} has NaN or infinite values")
    return frame


def probe(
    features: Mapping[str, pd.DataFrame | np.ndarray],
    labels: pd.Series | np.ndarray,
    *,
    combine: bool = True,
    n_splits: int = 5,
    c: float = 1.0,
    seed: int = 0,
    alpha: float = 0.05,
) -> ProbeResult:
    """Cross-validated AUROC with a CI for each feature set (and, with ``combine``, all joined).

    Parameters
    ----------
    features
        Name -> table (rows are samples; DataFrames are aligned to ``labels``' index) or array.
    labels
        Binary attribute (0/1 or bool; two distinct values otherwise, the larger being positive).
    combine
        Also fit on the column-wise concatenation of all sets (named ``"a+b"``).
    """
    if not features:
        raise InvalidArgumentError("give at least one feature set")
    if not isinstance(labels, pd.Series):
        labels = pd.Series(np.asarray(labels))
    if labels.isna().any():
        raise InputDataError(f"labels have {int(labels.isna().sum())} missing values")
    values = np.unique(labels.to_numpy())
    if len(values) != 2:
        raise InputDataError(f"labels must be binary, got {len(values)} distinct values")
    y = (labels.to_numpy() == values[1]).astype(int)
    smallest = int(min(y.sum(), len(y) - y.sum()))
    if smallest < n_splits:
        raise InputDataError(f"the rarer class has {smallest} samples, fewer than {n_splits} folds")
    frames = {name: _as_frame(name, data, labels.index) for name, data in features.items()}
    if combine and len(frames) > 1:
        joined = pd.concat(
            [f.add_prefix(f"{name}.") for name, f in frames.items()], axis=1
        )
        frames["+".join(frames)] = joined
    rows, oof = [], {}
    for name, frame in frames.items():
        p = fit_probe(frame.to_numpy(dtype=np.float64), y, n_splits=n_splits, c=c, seed=seed)
        auc, se, lo, hi = delong_auc_ci(y, p, alpha)
        oof[name] = p
        rows.append({"feature_set": name, "n_samples": len(y), "n_positive": int(y.sum()),
                     "n_features": frame.shape[1], "auroc": auc, "se": se,
                     "ci_low": lo, "ci_high": hi})
    return ProbeResult(pd.DataFrame(rows), oof, y)


def embedding_frame(table: pd.DataFrame, id_column: str = "slide",
                    column: str = "embedding") -> pd.DataFrame:
    """Expand a list-valued embedding column (one row per slide) to ``emb_0 ... emb_{D-1}``."""
    if column not in table or id_column not in table:
        raise InputDataError(f"embedding table needs columns {id_column!r} and {column!r}")
    mat = np.stack([np.asarray(v, dtype=np.float64) for v in table[column]])
    return pd.DataFrame(mat, index=table[id_column].astype(str).to_numpy(),
                        columns=[f"emb_{i}" for i in range(mat.shape[1])])
