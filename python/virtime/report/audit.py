"""The report's channel-audit section: composition, redundancy, specificity and trust tiers."""

from __future__ import annotations

import numpy as np

from virtime.report.html import ReportSection, TableBlock, TextBlock, figure_block

__all__ = ["audit_section", "specificity_plot"]

_SHOWN = ("channel", "n", "r2_composition", "partial_r.DAPI.density", "max_abs_r_other",
          "most_similar", "composition_driven", "redundant", "own_pearson", "best_other",
          "best_other_pearson", "own_dice", "best_other_dice", "off_target", "tier")


def specificity_plot(matrix, title: str = "Pearson"):
    """Heat map of a specificity matrix (rows predicted, columns measured); the diagonal boxed."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    m = matrix.to_numpy(float)
    fig = Figure(figsize=(7.5, 6.5))
    ax = fig.add_subplot()
    lim = float(np.nanmax(np.abs(m))) if np.isfinite(m).any() else 1.0
    im = ax.imshow(m, cmap="RdBu_r", vmin=-lim, vmax=lim)
    ax.set_xticks(range(m.shape[1]), matrix.columns, rotation=90, fontsize=7)
    ax.set_yticks(range(m.shape[0]), matrix.index, fontsize=7)
    for i, name in enumerate(matrix.index):
        if name in matrix.columns:
            j = list(matrix.columns).index(name)
            ax.add_patch(matplotlib.patches.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False,
                                                      lw=0.8, color="black"))
    ax.set_xlabel("measured channel")
    ax.set_ylabel("predicted channel")
    ax.set_title(f"Specificity matrix ({title})")
    fig.colorbar(im, ax=ax, shrink=0.7)
    fig.tight_layout()
    return fig


def audit_section(audit) -> ReportSection:
    """Table of every channel's audit and, with ground truth, the specificity heat maps."""
    from virtime.stats.audit import COMPOSITION_R2, REDUNDANT_R

    s = audit.summary
    sec = ReportSection("Channel audit", anchor="audit")
    sec.add(TextBlock(
        f"Composition covariates: {', '.join(audit.covariates) or 'none'}. A channel whose "
        f"slide-level density they explain with R² ≥ {COMPOSITION_R2} is composition-driven "
        "(its associations are mostly cellularity and tissue amount); |r| ≥ "
        f"{REDUNDANT_R} with another channel makes it redundant; off-target channels match "
        "another measured marker better than their own. Trust tier: the Pearson tier of the "
        "paired evaluation (unknown without one), low when off-target, one step lower when "
        "composition-driven. Channel labels in the bubble grids take these tiers' colours."))
    flagged = {k: list(s.loc[s[k].astype(bool), "channel"]) for k in
               ("composition_driven", "redundant", "off_target") if k in s}
    sec.add(TextBlock("; ".join(f"{k.replace('_', '-')}: {', '.join(v) or 'none'}"
                                for k, v in flagged.items())))
    cols = [c for c in _SHOWN if c in s.columns] + [c for c in s.columns if c.startswith("r2.")]
    sec.add(TableBlock(s[cols], "Channel audit", max_rows=len(s)))
    if audit.specificity is not None:
        sec.add(figure_block(specificity_plot(audit.specificity.pearson, "Pearson"),
                             "Predicted channel (rows) against measured channel (columns): "
                             "box-sum Pearson; the diagonal is each channel's own score"))
        sec.add(figure_block(specificity_plot(audit.specificity.dice, "Dice"),
                             "The same pairs by pooled Dice"))
    return sec
