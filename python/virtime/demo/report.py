"""The demo's HTML report: recovery of planted effects first, then the standard sections."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from virtime.io.slide_folder import SlideFolder
from virtime.report import ReportSection, TableBlock, TextBlock, build_report, standard_sections

# Planted groups shown in the gallery: (title, positive class, negative class, feature, channels).
_GROUPS: tuple[tuple[str, str, str, str, tuple[str, ...]], ...] = (
    ("MSI-high vs MSS", "`MSI-high` == 1", "`MSI-high` == 0", "CD8.tumour_density", ("CD8", "CK")),
    ("KRAS-mutant vs wild-type LUAD", "subtype == 'LUAD' and KRAS == 1",
     "subtype == 'LUAD' and KRAS == 0", "CD138.density", ("CD138",)),
    ("stage IV vs stage I", "stage == 'IV'", "stage == 'I'", "Ki67.density", ("Ki67", "CK")),
)

__all__ = ["demo_gallery", "demo_report", "recovery_text"]

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
    art = truth.loc[truth["role"] == "artefact", "effect"].drop_duplicates()
    sec.add(TextBlock(
        "Each association analysis is scored three ways: 'associations' is the paper's naive "
        "test; 'associations (adjusted)' adjusts for the demo's covariates (the site by "
        "default); 'associations (control-flagged)' withholds naive discoveries whose effect is "
        "no larger than the background channels' (shown only when the features include them). "
        + (f"The population carries a site artefact ({art.iloc[0]}): the column 'artefact' "
           "counts discoveries on its rows of the truth table — false discoveries made through "
           "the site's stain look and patient mix." if len(art) else "")))
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


def _median_slide(frame: pd.DataFrame, feature: str) -> pd.Series | None:
    """The row whose ground-truth ``feature`` is nearest its class median (a typical slide)."""
    frame = frame[np.isfinite(frame[f"{feature}.truth"].to_numpy(float))]
    if not len(frame):
        return None
    gap = (frame[f"{feature}.truth"] - frame[f"{feature}.truth"].median()).abs()
    return frame.loc[gap.sort_values(kind="stable").index[0]]


def demo_gallery(cohort_root: str | Path, *, max_px: int = 160) -> ReportSection:
    """One typical slide per planted group: H&E, ground-truth mIF and virtual mIF side by side.

    For each planted contrast (MSI-high vs not, KRAS-mutant vs wild-type LUAD, stage IV vs I) the
    slide of each class whose ground-truth feature is nearest the class median, with the
    feature's ground-truth and virtual values.
    """
    from virtime.features import read_features
    from virtime.report.gallery import GalleryRow, gallery_block

    root = Path(cohort_root)
    sec = ReportSection("Gallery: ground truth, virtual mIF and H&E", anchor="gallery")
    try:
        clinical = pd.read_csv(root / "clinical.csv")
        slides = pd.read_csv(root / "slides.csv")[["slide_id", "patient_id"]]
    except OSError as exc:
        return sec.add(TextBlock(f"No gallery: cannot read the cohort tables in {root} ({exc})."))
    table = slides.merge(clinical.drop(columns=["slide_id"], errors="ignore"), on="patient_id")
    rows = []
    for sid in table["slide_id"]:
        t_path, v_path = root / "truth_features" / f"{sid}.parquet", root / "virtual" / sid
        if not t_path.is_file() or not (v_path / SlideFolder.FEATURES).is_file():
            rows.append({})
            continue
        t, _ = read_features(t_path)
        v, _ = read_features(v_path / SlideFolder.FEATURES)
        rows.append({**{f"{c}.truth": t[c].iloc[0] for c in t.columns if c not in table},
                     **{f"{c}.virtual": v[c].iloc[0] for c in v.columns if c not in table}})
    table = pd.concat([table.reset_index(drop=True), pd.DataFrame(rows)], axis=1)
    sec.add(TextBlock(
        "For each planted contrast, the slide of each class whose ground-truth feature is nearest "
        "its class median. Per slide: H&E, the ground-truth mIF composite, the virtual mIF "
        "composite, then each relevant channel as ground truth and as the translator paints it "
        "(colour = channel, brightness = positive share or predicted probability). Where the "
        "two differ, the translator is wrong."))
    for title, pos, neg, feature, channels in _GROUPS:
        if f"{feature}.truth" not in table:
            sec.add(TextBlock(f"{title}: no {feature} in the features."))
            continue
        picked = []
        for cls_name, query in ((title.split(" vs ")[0], pos), (title.split(" vs ")[1], neg)):
            row = _median_slide(table.query(query), feature)
            if row is None:
                continue
            gt = np.load(root / "truth_mif" / f"{row['slide_id']}.npz")["prob"]
            picked.append(GalleryRow(
                root / "virtual" / str(row["slide_id"]), f"{title}: {cls_name}",
                {f"{feature} ground truth": float(row[f"{feature}.truth"]),
                 f"{feature} virtual": float(row.get(f"{feature}.virtual", np.nan))}, truth=gt))
        if picked:
            sec.add(TextBlock(f"{title} — {feature}; channels {', '.join(channels)}."))
            sec.add(gallery_block(picked, channels, max_px=max_px))
    return sec


def demo_report(path: str | Path, *, cfg: Any, model: Any, truth: pd.DataFrame,
                recovery: pd.DataFrame, fidelity: pd.DataFrame, res_truth: dict,
                res_virtual: dict, validation: Any, n_patients: dict[str, int],
                cohort_root: str | Path | None = None) -> Path:
    """Writes the demo report: overview, recovery, a gallery of planted groups, fidelity, then
    the standard sections (cohort, spectrum, associations, survival on the virtual mIF of cohort
    A; validation A vs B) and the ground-truth association counts for comparison.

    ``cohort_root`` is cohort A's folder (default: ``cohort_a`` beside the report)."""
    tiers = getattr(model.card, "confidence_tiers", None) or None
    root = Path(cohort_root) if cohort_root is not None else Path(path).parent / "cohort_a"
    sections = [_overview(cfg, model, n_patients, truth), _recovery(recovery, truth, cfg.alpha),
                demo_gallery(root), _fidelity(fidelity)]
    sections += standard_sections(cohort=res_virtual["cohort"], associations=res_virtual["assoc"],
                                  survival=res_virtual["surv"], validation=validation, tiers=tiers,
                                  time_unit="months")  # the simulator's os_time unit
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
