"""The report's site section: site predictability and the site-aware survival signature."""

from __future__ import annotations

import pandas as pd

from virtime.report.html import ReportSection, TableBlock, TextBlock

__all__ = ["site_section"]


def site_section(predictability, signature: pd.DataFrame | None = None) -> ReportSection:
    """``predictability``: :class:`~virtime.stats.site.SitePredictability`; ``signature``: the
    table of :func:`~virtime.stats.site.site_signature` (None without survival)."""
    sec = ReportSection("Site", anchor="site")
    sec.add(TextBlock(("Warning: " if predictability.warn else "") + predictability.message
                      + "."))
    if signature is not None:
        sec.add(TextBlock(
            "The out-of-fold survival signature with k-fold folds, with whole sites held out, "
            "and with the site partialled out of the features. A signature that only knows the "
            "site loses its C when sites are held out and ranks at chance within sites "
            "(c_within_site)."))
        sec.add(TableBlock(signature, "Survival signature by validation scheme"))
    return sec
