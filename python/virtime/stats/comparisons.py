"""Comparisons built on an association table: metrics against each other, OR pairs against singles.

The paper's Figure 5 asks two questions of the same association run: how many significant
associations each spatial metric (density, entropy, SNR, sharpness …) finds, and whether the OR
density of a channel pair (CD138|CD68, PD-L1|Caspase3) associates more strongly than either channel
alone. Both are views of :class:`~virtime.stats.associations.AssociationResult.summary`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from virtime.stats.associations import AssociationResult

__all__ = ["combination_comparison", "metric_comparison", "split_feature"]

_KEYS = ["level", "group", "attribute"]


def split_feature(feature: str) -> tuple[str, str]:
    """``"CD8.density"`` → ``("CD8", "density")``; the metric is after the last dot."""
    channel, _, metric = feature.rpartition(".")
    return channel, metric


def _feature_names(summary: pd.DataFrame) -> list[str]:
    """The features of an association summary (its categories; an empty summary has none)."""
    col = summary["feature"]
    if isinstance(col.dtype, pd.CategoricalDtype):
        return [str(f) for f in col.cat.categories]
    return [str(f) for f in pd.unique(col.astype(str))]


def metric_comparison(result: AssociationResult, alpha: float | None = None) -> pd.DataFrame:
    """Significant associations per metric (rows) and level (columns), plus tests per metric.

    Only single-channel features count (combinations like ``A|B.or_density`` are left out), so
    each metric is compared over the same channels.
    """
    a = result.config.alpha if alpha is None else alpha
    s = result.summary
    feats = pd.Series(_feature_names(s), dtype=object)
    parts = feats.map(split_feature)
    from virtime.channels import CHANNEL_NAMES

    # single channels only: pairs, tumour.area_fraction and immune.phenotype=<c> are left out
    single = pd.Series([c in CHANNEL_NAMES for c, _ in parts], index=feats.index)
    metric_of = pd.Series([m for _, m in parts], index=feats)[single.to_numpy()]
    sub = s[s["feature"].isin(metric_of.index)]
    metric = sub["feature"].astype(str).map(metric_of)
    sig = (sub["q"] < a)
    table = sig.groupby([metric, sub["level"].astype(str)]).sum().unstack(fill_value=0)
    table["total"] = table.sum(axis=1)
    table["tests"] = sub.groupby(metric).size()
    table.index.name = "metric"
    return table.sort_values("total", ascending=False)


def combination_comparison(result: AssociationResult, base_metric: str = "density"
                           ) -> pd.DataFrame:
    """Each pair feature (``A|B.or_density`` / ``A&B.and_density``) against its two channels.

    One row per pair × level × group × attribute tested for the pair and both singles, with p/q of
    the pair and of ``A.<base_metric>`` and ``B.<base_metric>``, and ``gain`` = −log10 q_pair −
    max(−log10 q_A, −log10 q_B) (> 0: the combination is stronger than its best channel).
    """
    s = result.summary
    feats = _feature_names(s)
    rows = []
    for f in feats:
        channel, metric = split_feature(f)
        for op in ("|", "&"):
            if op in channel:
                a, b = channel.split(op, 1)
                rows.append((f, a, b, "or" if op == "|" else "and", metric))
    cols = ["pair", "operation", "channel_a", "channel_b", *_KEYS, "p_pair", "q_pair", "p_a",
            "q_a", "p_b", "q_b", "gain"]
    if not rows:
        return pd.DataFrame(columns=cols)
    base = s[_KEYS + ["feature", "p", "q"]].copy()
    base["feature"] = base["feature"].astype(str)
    for k in _KEYS:
        base[k] = base[k].astype(str)
    indexed = base.set_index(["feature", *_KEYS])
    out = []
    for f, a, b, op, _metric in rows:
        fa, fb = f"{a}.{base_metric}", f"{b}.{base_metric}"
        try:
            pair = indexed.loc[f]
            sa, sb = indexed.loc[fa], indexed.loc[fb]
        except KeyError:
            continue
        m = pair.join(sa, rsuffix="_a", how="inner").join(sb, rsuffix="_b", how="inner")
        m = m.rename(columns={"p": "p_pair", "q": "q_pair"}).reset_index()
        m.insert(0, "pair", f)
        m.insert(1, "operation", op)
        m.insert(2, "channel_a", a)
        m.insert(3, "channel_b", b)
        out.append(m)
    if not out:
        return pd.DataFrame(columns=cols)
    df = pd.concat(out, ignore_index=True)
    with np.errstate(divide="ignore"):
        lq = lambda q: -np.log10(np.clip(q.to_numpy(dtype=float), 1e-300, 1))
        df["gain"] = lq(df["q_pair"]) - np.maximum(lq(df["q_a"]), lq(df["q_b"]))
    return df[cols].sort_values("gain", ascending=False, kind="mergesort").reset_index(drop=True)
