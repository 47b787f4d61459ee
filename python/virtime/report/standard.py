"""The standard report sections, built from the statistics result objects.

Each builder takes a result object and returns one :class:`ReportSection`; callers pick what they
have (a cohort without survival data simply gets no survival section) and may append their own
sections before calling :func:`build_report` — :func:`write_report` does both in one call.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from virtime.report.html import ReportSection, TableBlock, TextBlock, build_report, figure_block

__all__ = [
    "associations_section",
    "cohort_section",
    "load_tiers",
    "spectrum_section",
    "standard_sections",
    "survival_section",
    "validation_section",
    "write_report",
]


def load_tiers(path: str | Path) -> dict[str, str]:
    """Channel → confidence tier from a JSON file, checked: one error naming the file and the
    problem.

    The file is an object ``{"CD8": "high", ...}`` or a model card (its ``confidence_tiers``);
    keys must be channel names, values strings (or numbers).
    """
    import json

    from virtime.channels import CHANNEL_NAMES
    from virtime.errors import InputDataError

    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # missing, a directory, unreadable, not UTF-8 or JSON
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise InputDataError(f"{p}: cannot read tiers JSON: {reason}") from exc
    if isinstance(data, dict) and isinstance(data.get("confidence_tiers"), dict):
        data = data["confidence_tiers"]
    if not isinstance(data, dict):
        raise InputDataError(f"{p}: tiers JSON must be an object mapping channel to tier "
                             f"(e.g. {{\"CD8\": \"high\"}}), got {type(data).__name__}")
    unknown = [str(k) for k in data if k not in CHANNEL_NAMES]
    if unknown:
        raise InputDataError(f"{p}: tiers name unknown channel(s) {', '.join(unknown[:5])}")
    bad = [k for k, v in data.items() if isinstance(v, bool) or not isinstance(v, (str, int, float))]
    if bad:
        raise InputDataError(f"{p}: tier of {', '.join(bad[:5])} must be a string such as "
                             f"'high', got {type(data[bad[0]]).__name__}")
    return {str(k): str(v) for k, v in data.items()}


def cohort_section(cohort) -> ReportSection:
    """Patients, subtypes and events per cancer type; patients the join lost."""
    sec = ReportSection("Cohort summary", anchor="cohort")
    d = cohort.data
    sec.add(TextBlock(
        f"{len(d)} patients, {d['cancer_type'].nunique()} cancer types, "
        f"{d['subtype'].nunique()} subtypes, {len(cohort.features)} features, clinical "
        f"attributes: {', '.join(f'{a} ({k})' for a, k in cohort.attributes.items()) or 'none'}."))
    if cohort.features_only or cohort.clinical_only:
        sec.add(TextBlock(
            f"The join lost {len(cohort.features_only)} patient(s) with features but no clinical "
            f"record and {len(cohort.clinical_only)} with clinical data but no features."))
    sec.add(TableBlock(cohort.summary, "Patients per cancer type", index=True))
    return sec


def spectrum_section(cohort) -> ReportSection:
    """The population TIME spectrum (circular bar plot, paper Figure 1B)."""
    from virtime.stats.plots import spectrum_plot

    return ReportSection("Population TIME spectrum", anchor="spectrum").add(figure_block(
        spectrum_plot(cohort), "Mean activation per channel, one sector per cancer type, each "
                               "channel scaled to its maximum over cancer types."))


def associations_section(result, *, tiers: Mapping[str, object] | None = None,
                         top: int = 25) -> ReportSection:
    """Counts per level, top associations, bubble grids, metric and combination comparisons."""
    from virtime.stats.comparisons import combination_comparison, metric_comparison
    from virtime.stats.plots import bubble_grid, combination_plot, metric_comparison_plot

    cfg = result.config
    sec = ReportSection("Associations", anchor="associations")
    sec.add(TextBlock(
        f"Binary attributes: Mann–Whitney U (effect: rank-biserial r); continuous: Spearman; "
        f"stage: {cfg.stage_test}. Correction: {cfg.correction} per level × group; groups need "
        f"≥ {cfg.min_patients} patients and ≥ {cfg.min_per_class} per class. {result.excluded} "
        "tests had an undefined p (constant feature) and were left out of their family."))
    if result.summary.empty:  # say which rule emptied it, not an empty table
        sec.add(TextBlock(result.skip_reason()))
        return sec
    sec.add(TableBlock(result.counts(), "Tests and significant associations per level",
                       index=True))
    sig = result.significant()
    if sig.empty:
        sec.add(TextBlock(f"No association reached q < {cfg.alpha} among "
                          f"{len(result.summary)} tests."))
    else:
        sec.add(TableBlock(sig.drop(columns=["note"]), f"Top associations (q < {cfg.alpha})",
                           max_rows=top))
    if "p_adj" in result.summary.columns:
        adj = result.summary
        what = cfg.adjust if isinstance(cfg.adjust, str) else ", ".join(cfg.adjust)
        sec.add(TextBlock(
            f"Adjusted for confounders ({what}; auto: cancer type pan-cancer, subtype per cancer "
            f"type, site wherever there is one): {int((adj['q_adj'] < cfg.alpha).sum())} "
            f"associations reach q_adj < {cfg.alpha}, "
            f"{int(result.control_like().fillna(False).sum())} of them no stronger than the "
            "background channels (control_like)."))
    if len(result.controls):
        sec.add(TableBlock(result.controls_by_level(), "Negative controls: protein tests whose "
                           "effect beats the strongest background channel (TRITC, Cy5)"))
    for level in [lv for lv in cfg.levels if lv in set(result.summary["level"].astype(str))]:
        sec.add(figure_block(bubble_grid(result, level=level, tiers=tiers),
                             f"Bubble grid — {level}: circle size −log10 q, red higher / blue "
                             "lower in the positive class or with higher values."))
    mc = metric_comparison(result)
    if len(mc) > 1:
        sec.add(TableBlock(mc, "Significant associations per metric", index=True))
        sec.add(figure_block(metric_comparison_plot(mc), "Significant associations per metric"))
    cc = combination_comparison(result)
    if len(cc):
        sec.add(TableBlock(cc, "Channel combinations against single channels (gain > 0: "
                               "the combination is stronger)", max_rows=top))
        sec.add(figure_block(combination_plot(cc), "−log10 q of combinations and their channels"))
    return sec


def survival_section(result, cohort=None, *, km_features: int = 2,
                     time_unit: str | None = None) -> ReportSection:
    """Per-channel log-rank/Cox table, bar plots of −log10 p with the signature, KM curves
    (``time_unit``: the unit of ``os_time``, named on their time axis)."""
    from virtime.stats.plots import km_feature_plot, km_signature_plot, survival_bar_plot
    from virtime.stats.survival import SIGNATURE

    cfg = result.config
    s = result.summary
    sec = ReportSection("Survival", anchor="survival")
    sec.add(TextBlock(
        f"Each channel split at the {cfg.split}, log-rank test; Cox model per channel (hazard "
        f"ratio per SD). Signature: ridge Cox (penalizer {cfg.signature_penalizer}) on all "
        f"channels, risk scored out of fold ({cfg.folds}-fold) and split at each training fold's "
        f"median, so its log-rank p is not optimistic. {len(result.failures)} fit(s) failed."))
    if result.skip_reason():
        sec.add(TextBlock(result.skip_reason()))
    if s.empty:  # the sentence above says which rule emptied it
        return sec
    sec.add(TableBlock(s.sort_values("logrank_p"), "Survival statistics", max_rows=40))
    if len(result.failures):
        sec.add(TableBlock(result.failures, "Failed fits"))
    groups = s[["level", "group"]].drop_duplicates().itertuples(index=False)
    for level, group in list(groups)[:6]:
        sec.add(figure_block(survival_bar_plot(result, level, group),
                             f"−log10 log-rank p per channel and for the signature — {group}"))
    pan = s[(s["level"] == "pan-cancer") & (s["kind"] == "channel")].sort_values("logrank_p")
    if cohort is not None:
        for f in pan["feature"].head(km_features):
            sec.add(figure_block(km_feature_plot(cohort, f, split=cfg.split,
                                                 time_unit=time_unit),
                                 f"Kaplan–Meier by {f} ({cfg.split} split), pan-cancer"))
    if (s["feature"] == SIGNATURE).any() and len(result.signature_scores):
        lv, gr = s.loc[s["feature"] == SIGNATURE, ["level", "group"]].iloc[0]
        sec.add(figure_block(km_signature_plot(result, lv, gr, time_unit=time_unit),
                             f"Kaplan–Meier of the out-of-fold signature — {gr}"))
    return sec


def validation_section(result) -> ReportSection:
    """Cross-cohort agreement: statistics, scatter of subtype means, overlap grid."""
    from virtime.stats.plots import cross_cohort_scatter, overlap_grid

    sec = ReportSection("Cross-cohort validation", anchor="validation")
    sec.add(TableBlock(result.summary, "Agreement between cohort A and cohort B"))
    sec.add(figure_block(cross_cohort_scatter(result),
                         "Subtype-level mean activation: one dot per channel × subtype"))
    sec.add(TableBlock(result.per_channel, "Spearman per channel over shared subtypes"))
    if len(result.overlap):
        sec.add(TableBlock(result.contingency, "Significant tests among those run in both",
                           index=True))
        for level in pd.unique(result.overlap["level"]):
            sec.add(figure_block(overlap_grid(result, level), f"Overlap grid — {level}"))
    return sec


def standard_sections(*, cohort=None, associations=None, survival=None,
                      validation=None, tiers: Mapping[str, object] | None = None,
                      time_unit: str | None = None) -> list[ReportSection]:
    """Every standard section for which a result is given, in reading order (``time_unit``:
    the unit of ``os_time``, e.g. ``"months"``, for the Kaplan–Meier axes)."""
    out: list[ReportSection] = []
    if cohort is not None:
        out += [cohort_section(cohort), spectrum_section(cohort)]
    if associations is not None:
        out.append(associations_section(associations, tiers=tiers))
    if survival is not None:
        out.append(survival_section(survival, cohort, time_unit=time_unit))
    if validation is not None:
        out.append(validation_section(validation))
    return out


def write_report(output: str | Path, *, cohort=None, associations=None, survival=None,
                 validation=None, tiers: Mapping[str, object] | None = None,
                 extra_sections: list[ReportSection] | None = None,
                 title: str = "virtime population report", time_unit: str | None = None) -> Path:
    """Standard sections plus ``extra_sections`` (appended) written as one HTML file
    (``time_unit``: the unit of ``os_time``, named on the Kaplan–Meier axes)."""
    sections = standard_sections(cohort=cohort, associations=associations, survival=survival,
                                 validation=validation, tiers=tiers, time_unit=time_unit)
    sections += list(extra_sections or [])
    return build_report(sections, output, title=title)
