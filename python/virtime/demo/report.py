"""The demo's HTML report: recovery of planted effects first, then the standard sections."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from virtime.report import ReportSection, TableBlock, TextBlock, build_report, standard_sections

__all__ = ["demo_report", "recovery_text"]

_TITLE = "virtime demo: a virtual population with planted biology"


def recovery_text(recovery: pd.DataFrame) -> str:
    """Plain-text recovery table (what ``virtime demo`` prints)."""
    if recovery.empty:
        return "no recovery scores"
    show = recovery.copy()
    for col in ("power", "fdp"):
        show[col] = show[col].map(lambda v: "n/a" if pd.isna(v) else f"{v:.2f}")
    return show.to_string(index=False)


def _overview(cfg: Any, model: Any, n_patients: dict[str, int], truth: pd.DataFrame
              ) -> ReportSection:
    card = model.card
    design_effects = truth.loc[truth["role"] == "primary", "effect"].drop_duplicates()
    sec = ReportSection("What this demo did", anchor="demo")
    sec.add(TextBlock(
        f"Two virtual cohorts were simulated: cohort A ({n_patients.get('A', 0)} patients, "
        f"reference scanner) and cohort B ({n_patients.get('B', 0)} patients, another lab's "
        f"stain look). Each patient has one {cfg.slide_px}x{cfg.slide_px}-pixel slide at "
        f"{card.input_mpp} µm/px whose tissue composition carries the planted biology. Every "
        f"slide was translated by the model ({card.architecture}, "
        f"{card.config.get('filters', '')}, weights sha256 {str(card.sha256)[:12]}…) into "
        f"virtual mIF; features were computed at {cfg.output_mpp} µm/px on the virtual mIF and, "
        "with the same code, on the ground-truth mIF rendered with each slide."))
    sec.add(TextBlock("Planted effects:\n\n" + "\n\n".join(f"• {e}" for e in design_effects)))
    sec.add(TextBlock(
        "The demo checkpoint is a small model trained briefly on simulated tiles; it knows only "
        "simulated tissue and misses rare or morphology-poor channels. Its numbers below show "
        "what a weak translator costs in discoveries; they say nothing about GigaTIME on real "
        "slides."))
    return sec


def _recovery(recovery: pd.DataFrame, truth: pd.DataFrame, alpha: float) -> ReportSection:
    sec = ReportSection("Recovery of planted effects", anchor="recovery")
    sec.add(TextBlock(
        f"A discovery is a test with q < {alpha}. Power = planted (primary) associations found "
        "with the right direction / those the analysis could test; false discovery proportion "
        "(FDP) = discoveries the truth table does not list (as primary or implied, same "
        "direction) / all discoveries. 'ground-truth' analyses the mIF rendered with the "
        "slides; 'virtual' analyses the translator's output — the gap is the translator's cost."))
    sec.add(TableBlock(recovery, "Power and false discovery proportion per level", max_rows=40))
    prim = truth[truth["role"] == "primary"].drop(columns=["effect", "role"])
    sec.add(TableBlock(prim, "Truth table: planted (primary) associations; size = expected "
                             "log2 fold change", max_rows=120))
    n_impl = int((truth["role"] == "implied").sum())
    sec.add(TextBlock(
        f"{n_impl} further rows are 'implied' (expected changes of at least ~5% through shared "
        "markers, displacement of tumour cells or the subtype mix); finding them is not a false "
        "discovery and missing them is not a loss of power. The full table is truth.csv."))
    return sec


def _fidelity(fidelity: pd.DataFrame) -> ReportSection:
    sec = ReportSection("Virtual against ground-truth features", anchor="fidelity")
    sec.add(TextBlock(
        "Spearman correlation over the slides of cohort A between each feature computed on the "
        "virtual mIF and on the ground-truth mIF. Associations can only be recovered through "
        "features the translator tracks."))
    sec.add(TableBlock(fidelity.sort_values("spearman", ascending=False, na_position="last"),
                       "Per-feature fidelity", max_rows=60))
    return sec


def demo_report(path: str | Path, *, cfg: Any, model: Any, truth: pd.DataFrame,
                recovery: pd.DataFrame, fidelity: pd.DataFrame, res_truth: dict,
                res_virtual: dict, validation: Any, n_patients: dict[str, int]) -> Path:
    """Writes the demo report: overview, recovery, fidelity, then the standard sections
    (cohort, spectrum, associations, survival on the virtual mIF of cohort A; validation A vs B)
    and the ground-truth association counts for comparison."""
    tiers = getattr(model.card, "confidence_tiers", None) or None
    sections = [_overview(cfg, model, n_patients, truth), _recovery(recovery, truth, cfg.alpha),
                _fidelity(fidelity)]
    sections += standard_sections(cohort=res_virtual["cohort"], associations=res_virtual["assoc"],
                                  survival=res_virtual["surv"], validation=validation, tiers=tiers)
    gt = ReportSection("Ground-truth mIF associations (for comparison)", anchor="ground-truth")
    if res_truth["assoc"] is None:
        gt.add(TextBlock("No usable ground-truth features."))
        return build_report([*sections, gt], path, title=_TITLE)
    gt.add(TableBlock(res_truth["assoc"].counts(), "Tests and significant associations per level",
                      index=True))
    gt.add(TableBlock(res_truth["assoc"].significant().drop(columns=["note"]),
                      f"Significant associations on the ground-truth mIF (q < {cfg.alpha})",
                      max_rows=60))
    sections.append(gt)
    return build_report(sections, path, title=_TITLE, subtitle="Simulated data only.")
