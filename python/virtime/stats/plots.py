"""Figures of the population analyses, as in the paper: bubble grid, metric and OR comparisons,
survival bars and Kaplan–Meier curves, cross-cohort scatter and overlap grid, TIME spectrum.

Every function returns a :class:`matplotlib.figure.Figure` built without pyplot (no global state,
no display needed), ready for :func:`virtime.report.figure_block` or ``fig.savefig``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from virtime.channels import CHANNEL_NAMES, get_channel
from virtime.stats.associations import AssociationResult
from virtime.stats.comparisons import split_feature
from virtime.stats.survival import SIGNATURE, SurvivalResult
from virtime.stats.validation import Cohort
from virtime.stats.validation_cohorts import CrossCohortResult

__all__ = [
    "TIER_COLORS",
    "bubble_grid",
    "combination_plot",
    "cross_cohort_scatter",
    "km_feature_plot",
    "km_plot",
    "km_signature_plot",
    "metric_comparison_plot",
    "overlap_grid",
    "spectrum_plot",
    "survival_bar_plot",
]

UP, DOWN, GREY = "#c0392b", "#2c7bb6", "#bbbbbb"
TIER_COLORS = {"high": "#1a9850", "medium": "#e08214", "low": "#b2182b"}
_FALLBACK = ["#1a9850", "#e08214", "#b2182b", "#542788", "#2166ac", "#737373"]


def _neglog(q: np.ndarray | pd.Series, cap: float = 10.0) -> np.ndarray:
    q = np.asarray(q, dtype=float)
    with np.errstate(divide="ignore"):
        return np.minimum(-np.log10(np.clip(q, 1e-300, 1.0)), cap)


def _channel_color(name: str) -> str:
    try:
        return get_channel(name).color
    except KeyError:
        return "#555555"


def _tier_colors(tiers: Mapping[str, object] | None) -> dict[str, str]:
    if not tiers:
        return {}
    labels = list(dict.fromkeys(str(t) for t in tiers.values()))
    palette = {lab: TIER_COLORS.get(lab.lower(), _FALLBACK[i % len(_FALLBACK)])
               for i, lab in enumerate(labels)}
    return {ch: palette[str(t)] for ch, t in tiers.items()}


def bubble_grid(result: AssociationResult, *, level: str = "pan-cancer",
                groups: list[str] | None = None, features: list[str] | None = None,
                attributes: list[str] | None = None, tiers: Mapping[str, object] | None = None,
                alpha: float | None = None, max_columns: int = 40, title: str = "") -> Figure:
    """Circles for features (rows) × group·attribute (columns): size −log10 q, colour direction.

    Non-significant tests are small grey dots. Columns default to the combinations with at least
    one significant feature (at most ``max_columns``, most hits first). ``tiers`` maps a channel
    to its confidence tier from the model card; the row labels take the tier's colour.
    """
    a = result.config.alpha if alpha is None else alpha
    s = result.summary[result.summary["level"] == level]
    if groups is not None:
        s = s[s["group"].isin(groups)]
    if attributes is not None:
        s = s[s["attribute"].isin(attributes)]
    s = s.assign(col=s["group"].astype(str) + " · " + s["attribute"].astype(str),
                 feature=s["feature"].astype(str))
    if features is None:
        features = [f for f in s["feature"].unique() if not any(op in f for op in "|&")]
    s = s[s["feature"].isin(features)]
    hits = s[s["q"] < a].groupby("col").size().sort_values(ascending=False)
    cols = list(hits.index[:max_columns]) or list(s["col"].unique()[:max_columns])
    s = s[s["col"].isin(cols)]
    rows = list(features)
    fig = Figure(figsize=(max(4.0, 0.35 * len(cols) + 2.5), max(3.0, 0.28 * len(rows) + 1.8)))
    ax = fig.add_subplot()
    xi = s["col"].map({c: i for i, c in enumerate(cols)}).to_numpy()
    yi = s["feature"].map({f: i for i, f in enumerate(rows)}).to_numpy()
    sig = (s["q"] < a).to_numpy()
    size = 12 + 28 * _neglog(s["q"])
    color = np.where(~sig, GREY, np.where(s["direction"].astype(str) == "higher", UP, DOWN))
    ax.scatter(xi, yi, s=np.where(sig, size, 6), c=color, edgecolors="none")
    ax.set_xticks(range(len(cols)), cols, rotation=70, ha="right", fontsize=7)
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    tc = _tier_colors(tiers)
    for lab in ax.get_yticklabels():
        lab.set_color(tc.get(split_feature(lab.get_text())[0], "black"))
    ax.set_xlim(-0.7, len(cols) - 0.3)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.grid(True, lw=0.3, alpha=0.4)
    handles = [Line2D([], [], ls="", marker="o", color=UP, label="higher"),
               Line2D([], [], ls="", marker="o", color=DOWN, label="lower"),
               Line2D([], [], ls="", marker="o", color=GREY, ms=3, label=f"q ≥ {a}")]
    if tiers:
        handles += [Patch(color=c, label=f"tier {t}") for t, c in
                    {str(t): tc[ch] for ch, t in tiers.items() if ch in tc}.items()]
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.set_title(title or f"Associations — {level} (size: −log10 q)", fontsize=9)
    fig.tight_layout()
    return fig


def metric_comparison_plot(table: pd.DataFrame, title: str = "") -> Figure:
    """Bars of significant associations per metric, stacked by level (Figure 5A–C of the paper)."""
    levels = [c for c in table.columns if c not in ("total", "tests")]
    fig = Figure(figsize=(1.2 * len(table) + 2.5, 3.5))
    ax = fig.add_subplot()
    bottom = np.zeros(len(table))
    for i, lv in enumerate(levels):
        ax.bar(table.index.astype(str), table[lv].to_numpy(), bottom=bottom, label=lv,
               color=_FALLBACK[i % len(_FALLBACK)])
        bottom += table[lv].to_numpy()
    ax.set_ylabel("significant associations")
    ax.legend(fontsize=7)
    ax.set_title(title or "Significant associations per metric", fontsize=9)
    fig.tight_layout()
    return fig


def combination_plot(comparison: pd.DataFrame, top: int = 10, title: str = "") -> Figure:
    """Grouped bars of −log10 q: each pair feature beside its two single channels (best ``top``)."""
    d = comparison.head(top)
    fig = Figure(figsize=(max(4.0, 0.9 * len(d) + 2), 3.8))
    ax = fig.add_subplot()
    x = np.arange(len(d))
    for k, (col, lab, c) in enumerate((("q_pair", "pair", "#542788"), ("q_a", "channel A", "#e08214"),
                                       ("q_b", "channel B", "#1a9850"))):
        ax.bar(x + (k - 1) * 0.27, _neglog(d[col], cap=50), width=0.27, label=lab, color=c)
    labels = [f"{p.rsplit('.', 1)[0]}\n{g} · {a}" for p, g, a in
              zip(d["pair"], d["group"], d["attribute"])]
    ax.set_xticks(x, labels, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("−log10 q")
    ax.legend(fontsize=7)
    ax.set_title(title or "Channel combinations against single channels", fontsize=9)
    fig.tight_layout()
    return fig


def survival_bar_plot(result: SurvivalResult, level: str = "pan-cancer", group: str = "all",
                      title: str = "") -> Figure:
    """−log10 log-rank p of every channel (median split) and of the out-of-fold signature."""
    s = result.summary[(result.summary["level"] == level) & (result.summary["group"] == group)]
    s = s.sort_values("logrank_p", ascending=False)
    names = [str(f).split(".")[0] if f != SIGNATURE else "signature" for f in s["feature"]]
    colors = ["#222222" if f == SIGNATURE else _channel_color(n) for f, n in zip(s["feature"], names)]
    fig = Figure(figsize=(6.0, max(3.0, 0.22 * len(s) + 1.2)))
    ax = fig.add_subplot()
    ax.barh(names, _neglog(s["logrank_p"], cap=50), color=colors, edgecolor="#333333", lw=0.3)
    ax.axvline(-np.log10(0.05), color="#888888", ls="--", lw=0.8)
    ax.set_xlabel("−log10 log-rank p")
    ax.tick_params(axis="y", labelsize=7)
    ax.set_title(title or f"Survival stratification — {level} {group}", fontsize=9)
    fig.tight_layout()
    return fig


def _time_label(time_unit: str | None) -> str:
    """The survival time axis: ``os_time`` in the unit the clinical table uses."""
    return f"os_time ({time_unit})" if time_unit else "os_time (the clinical table's unit)"


def km_plot(time: np.ndarray, event: np.ndarray, labels: np.ndarray, title: str = "",
            p: float | None = None, *, time_unit: str | None = None) -> Figure:
    """Kaplan–Meier curves per label with numbers at risk under the axis (lifelines).

    ``time_unit`` (e.g. ``"months"``) names the x axis's unit; virtime cannot know it from the
    table, so without it the axis says it is the clinical table's own unit.
    """
    from lifelines import KaplanMeierFitter
    from lifelines.plotting import add_at_risk_counts

    fig = Figure(figsize=(6.0, 4.8))
    ax = fig.add_subplot()
    fitters = []
    labels = np.asarray(labels)
    for lab in sorted(pd.unique(labels)):
        m = labels == lab
        km = KaplanMeierFitter(label=f"{lab} (n={int(m.sum())})").fit(time[m], event[m])
        km.plot_survival_function(ax=ax, ci_show=False)
        fitters.append(km)
    add_at_risk_counts(*fitters, ax=ax, fig=fig, rows_to_show=["At risk"])
    ax.set_xlabel(_time_label(time_unit))
    ax.set_ylabel("survival probability")
    ax.set_title((title or "Kaplan–Meier") + (f" (log-rank p = {p:.2g})" if p is not None else ""),
                 fontsize=9)
    fig.tight_layout()
    return fig


def km_feature_plot(cohort: Cohort, feature: str, *, level: str = "pan-cancer",
                    group: str = "all", split: str = "median",
                    time_unit: str | None = None) -> Figure:
    """KM plot of one feature split at its median (or tertiles) in one group."""
    from virtime.stats.logrank import logrank, split_groups

    d = cohort.data[cohort.data["os_time"].notna() & cohort.data[feature].notna()]
    if level != "pan-cancer":
        d = d[d[level] == group]
    t, e = d["os_time"].to_numpy(float), d["os_event"].to_numpy(float)
    labels = split_groups(d[feature].to_numpy(float), split)
    p = logrank(t, e, labels).p if len(set(labels)) > 1 else None
    return km_plot(t, e, labels, f"{feature} — {group}", p, time_unit=time_unit)


def km_signature_plot(result: SurvivalResult, level: str = "pan-cancer", group: str = "all",
                      *, time_unit: str | None = None) -> Figure:
    """KM plot of the out-of-fold signature's high/low risk groups."""
    sc = result.signature_scores
    sc = sc[(sc["level"] == level) & (sc["group"] == group) & sc["risk"].notna()]
    row = result.summary[(result.summary["level"] == level) & (result.summary["group"] == group)
                         & (result.summary["feature"] == SIGNATURE)]
    p = float(row["logrank_p"].iloc[0]) if len(row) else None
    labels = np.where(sc["high"].to_numpy(bool), "high risk", "low risk")
    return km_plot(sc["os_time"].to_numpy(float), sc["os_event"].to_numpy(float), labels,
                   f"Signature (out of fold) — {group}", p, time_unit=time_unit)


def cross_cohort_scatter(result: CrossCohortResult, title: str = "") -> Figure:
    """Subtype-level mean activation, cohort A vs B: one dot per channel × subtype."""
    pts = result.points
    fig = Figure(figsize=(5.2, 4.6))
    ax = fig.add_subplot()
    colors = [_channel_color(str(f).split(".")[0]) for f in pts["feature"]]
    ax.scatter(pts["mean_a"], pts["mean_b"], s=14, c=colors, edgecolors="#333333", lw=0.2)
    lo = float(np.nanmin([pts["mean_a"].min(), pts["mean_b"].min()]))
    hi = float(np.nanmax([pts["mean_a"].max(), pts["mean_b"].max()]))
    ax.plot([lo, hi], [lo, hi], color="#999999", lw=0.8, ls="--")
    ax.set_xlabel("cohort A: subtype mean")
    ax.set_ylabel("cohort B: subtype mean")
    s = result.summary.set_index("statistic")
    sub = ""
    if "spearman_subtype_means" in s.index:
        sub = (f" (Spearman ρ = {s.loc['spearman_subtype_means', 'value']:.2f}, "
               f"p = {s.loc['spearman_subtype_means', 'p']:.2g})")
    ax.set_title((title or "Cross-cohort activation") + sub, fontsize=9)
    fig.tight_layout()
    return fig


def overlap_grid(result: CrossCohortResult, level: str = "pan-cancer", title: str = "") -> Figure:
    """Features × attributes: significant in both cohorts, only A, only B (any group of the level)."""
    o = result.overlap[result.overlap["level"] == level]
    fig = Figure(figsize=(6.0, 4.0))
    ax = fig.add_subplot()
    if o.empty:
        ax.text(0.5, 0.5, "no shared tests", ha="center")
        return fig
    status = o.assign(code=np.where(o.sig_a & o.sig_b, 3, np.where(o.sig_a, 2,
                                                                   np.where(o.sig_b, 1, 0))))
    grid = status.groupby(["feature", "attribute"])["code"].max().unstack(fill_value=0)
    cmap = {0: "#f0f0f0", 1: "#4393c3", 2: "#f4a582", 3: "#b2182b"}
    img = grid.to_numpy().astype(int)
    from matplotlib.colors import ListedColormap

    ax.imshow(img, cmap=ListedColormap([cmap[k] for k in range(4)]), vmin=0, vmax=3,
              aspect="auto", interpolation="nearest")
    ax.set_xticks(range(grid.shape[1]), grid.columns, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(grid.shape[0]), grid.index, fontsize=6)
    ax.legend(handles=[Patch(color=cmap[3], label="both"), Patch(color=cmap[2], label="A only"),
                       Patch(color=cmap[1], label="B only")], fontsize=7, loc="upper left",
              bbox_to_anchor=(1.01, 1))
    fig.set_size_inches(0.4 * grid.shape[1] + 3.5, 0.2 * grid.shape[0] + 1.8)
    ax.set_title(title or f"Significant associations in A, B and both — {level}", fontsize=9)
    fig.tight_layout()
    return fig


def _upright_tangent(theta: float) -> float:
    """Rotation (degrees) of a label along the circle at polar angle ``theta``, turned half a
    turn where it would read upside down (the lower half of the circle)."""
    rotation = (np.degrees(theta) - 90.0) % 360.0
    return float(rotation - 180.0 if 90.0 < rotation < 270.0 else rotation)


def spectrum_plot(cohort: Cohort, features: list[str] | None = None, title: str = "") -> Figure:
    """The population TIME spectrum: circular bars of mean activation per channel, one sector
    per cancer type (paper Figure 1B). Each channel is scaled to its maximum over cancer types.
    """
    if features is None:
        features = [f"{c}.density" for c in CHANNEL_NAMES if f"{c}.density" in cohort.features]
    means = cohort.data.groupby("cancer_type")[features].mean()
    scaled = means / means.max().replace(0, 1)
    n_types, n_ch = scaled.shape
    gap = 2
    slots = n_types * (n_ch + gap)
    width = 2 * np.pi / slots
    fig = Figure(figsize=(7.5, 7.5))
    ax = fig.add_subplot(projection="polar")
    colors = [_channel_color(f.split(".")[0]) for f in features]
    for i, (ct, row) in enumerate(scaled.iterrows()):
        theta = (i * (n_ch + gap) + np.arange(n_ch)) * width
        ax.bar(theta, row.to_numpy(), width=width * 0.9, bottom=0.35, color=colors,
               edgecolor="none")
        mid = theta.mean()
        ax.text(mid, 1.55, str(ct), ha="center", va="center", fontsize=10,
                rotation=_upright_tangent(mid), rotation_mode="anchor")
    ax.set_ylim(0, 1.7)
    ax.set_axis_off()
    ax.legend(handles=[Patch(color=c, label=f.split(".")[0]) for f, c in zip(features, colors)],
              fontsize=10, ncol=1, loc="center left", bbox_to_anchor=(1.02, 0.5))
    ax.set_title(title or "Population TIME spectrum (mean activation per cancer type)", fontsize=9)
    fig.tight_layout()
    return fig
