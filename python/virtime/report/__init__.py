"""The self-contained HTML report: composable sections of text, tables and base64 figures.

Build any sections you like and write them with :func:`build_report`; :func:`standard_sections`
makes the usual ones from statistics results, and :func:`write_report` does both::

    from virtime.report import ReportSection, TableBlock, write_report
    extra = ReportSection("Recovery of planted effects").add(TableBlock(recovery_df))
    write_report("report.html", cohort=cohort, associations=assoc, survival=surv,
                 extra_sections=[extra])
"""

from __future__ import annotations

from virtime.report.gallery import GalleryRow, gallery_block, gallery_section
from virtime.report.html import (
    Block,
    FigureBlock,
    HtmlBlock,
    ReportSection,
    TableBlock,
    TextBlock,
    build_report,
    figure_block,
    render_report,
)
from virtime.report.standard import (
    associations_section,
    cohort_section,
    load_tiers,
    spectrum_section,
    standard_sections,
    survival_section,
    validation_section,
    write_report,
)

__all__ = [
    "Block",
    "FigureBlock",
    "GalleryRow",
    "HtmlBlock",
    "ReportSection",
    "TableBlock",
    "TextBlock",
    "associations_section",
    "build_report",
    "cohort_section",
    "figure_block",
    "gallery_block",
    "gallery_section",
    "load_tiers",
    "render_report",
    "spectrum_section",
    "standard_sections",
    "survival_section",
    "validation_section",
    "write_report",
]
