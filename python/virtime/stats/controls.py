"""Negative controls: how the background channels (TRITC, Cy5) fare in the same tests.

The background channels carry no protein, yet a model predicts them from the same H&E, so they
follow stain, scanner and tissue composition like every channel does. Tested with the same
attribute, level and group as the protein channels, the strongest background effect is the size of
an association that composition alone can produce. A protein channel's discovery whose effect is
not larger is flagged ``control_like``: it may be real, but the image shows nothing a channel
without protein would not show too.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["CONTROL_COLUMNS", "control_comparison", "control_like", "control_metric"]

CONTROL_COLUMNS = ["level", "group", "attribute", "metric", "control_feature", "control_effect",
                   "n_protein", "n_beating"]
_KEYS = ["level", "group", "attribute", "metric"]


def control_metric(feature: str) -> str | None:
    """The background metric a feature is compared with: its own metric for a channel feature
    (``CD8.entropy`` → entropy), density for pair and cell densities, None otherwise."""
    channel, _, metric = feature.rpartition(".")
    if metric in ("or_density", "and_density") or (feature.startswith("cells.")
                                                  and metric == "density"):
        return "density"
    if not channel or channel.startswith(("cells", "tumour", "immune")):
        return None
    return metric


def _with_metric(summary: pd.DataFrame) -> pd.DataFrame:
    feats = pd.Series(pd.unique(summary["feature"].astype(str)))
    metric_of = dict(zip(feats, feats.map(control_metric)))
    out = summary.assign(metric=summary["feature"].astype(str).map(metric_of))
    for k in ("level", "group", "attribute"):
        out[k] = out[k].astype(str)
    return out


def control_comparison(summary: pd.DataFrame, controls: pd.DataFrame, effect: str = "effect"
                       ) -> pd.DataFrame:
    """Per level × group × attribute × metric: the strongest background |effect| and how many
    protein features beat it (|effect| strictly larger), from two association summaries."""
    if controls.empty or summary.empty:
        return pd.DataFrame(columns=CONTROL_COLUMNS)
    c = _with_metric(controls).dropna(subset=[effect])
    c = c.assign(abs_effect=c[effect].abs())
    strongest = c.sort_values("abs_effect", ascending=False, kind="mergesort").drop_duplicates(
        _KEYS).set_index(_KEYS)
    s = _with_metric(summary).dropna(subset=["metric", effect])
    s = s.join(strongest["abs_effect"].rename("control_effect"), on=_KEYS, how="inner")
    beat = (s[effect].abs() > s["control_effect"])
    table = pd.DataFrame({"n_protein": s.groupby(_KEYS).size(),
                          "n_beating": beat.groupby([s[k] for k in _KEYS]).sum()})
    table = table.join(strongest[["feature", "abs_effect"]].rename(
        columns={"feature": "control_feature", "abs_effect": "control_effect"}))
    table["control_feature"] = table["control_feature"].astype(str)
    return table.reset_index()[CONTROL_COLUMNS]


def control_like(summary: pd.DataFrame, comparison: pd.DataFrame, *, q: str = "q",
                 effect: str = "effect", alpha: float = 0.05) -> pd.Series:
    """True for discoveries (``q`` < ``alpha``) whose |effect| does not exceed the strongest
    background effect of the same level, group, attribute and metric; False for the other
    discoveries and non-discoveries; NA where no control was tested."""
    s = _with_metric(summary)
    if comparison.empty:
        return pd.Series(pd.array([pd.NA] * len(summary), dtype="boolean"), index=summary.index,
                         name="control_like")
    ctrl = comparison.set_index(_KEYS)["control_effect"]
    bound = s.join(ctrl, on=_KEYS)["control_effect"].to_numpy(dtype=float)
    flag = pd.array((s[q].to_numpy(dtype=float) < alpha)
                    & (np.abs(s[effect].to_numpy(dtype=float)) <= bound), dtype="boolean")
    flag[np.isnan(bound)] = pd.NA
    return pd.Series(flag, index=summary.index, name="control_like")

