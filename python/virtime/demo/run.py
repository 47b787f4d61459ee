"""The end-to-end demo: simulate two cohorts, translate every slide, analyse, score, report.

1. Cohort A (``patients``, reference scanner) and cohort B (``second_patients``, another lab's
   stain look) are drawn and rendered with planted biology (:mod:`virtime.simulate.cohort`).
2. Every slide is translated in-process by :func:`virtime.translate`, one engine reused.
3. Features of the virtual mIF (from the translation) and of the ground-truth mIF (rendered with
   the slides, same feature code) are joined with the clinical tables.
4. Associations and survival (with the out-of-fold signature) on both, the cross-cohort
   validation on the virtual features of A and B.
5. Recovery against the truth table — power and false discovery proportion per level, ground
   truth beside virtual — and one HTML report.

Everything is written under ``output`` and a rerun resumes: rendered slides and finished
translations are skipped; the analysis (fast) is redone.
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from virtime._progress import progress
from virtime.errors import InvalidArgumentError, VirtimeWarning
from virtime.simulate.cohort import CohortDesign, analysed_features, default_design

__all__ = ["DemoConfig", "DemoResult", "prepare_features", "run_demo"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoConfig:
    """Size and settings of the demo.

    ``slide_px``: slide side at the model's input mpp (one slide per patient);
    ``second_patients``: size of cohort B (default 40% of ``patients``); ``output_mpp``: the
    virtual and ground-truth maps' resolution for features; ``backend``/``window_batch``: engine;
    ``precision``: the engine's (``"int8"`` with an INT8 translator from ``virtime quantize`` as
    the model, on ``backend="openvino"``: the end-to-end check of benchmarks/bench_int8_demo.py);
    ``cells``: also segment virtual cells (``translate --cells``) and test the cell densities
    (source ``virtual-cells`` in the recovery table); ``adjust``: the covariates of the adjusted
    associations (``associate --adjust``) — the simulated site by default, the one confounder the
    design plants (:class:`~virtime.simulate.cohort.SiteArtefact`); "auto" adds cancer type and
    subtype, which also removes planted pan-cancer rows the truth table counts through the subtype
    mix; a covariate the clinical table lacks is dropped.
    """

    patients: int = 300
    second_patients: int | None = None
    slide_px: int = 512
    seed: int = 0
    alpha: float = 0.05
    output_mpp: float = 1.0
    backend: str = "onnxruntime"
    precision: str = "fp32"
    window_batch: int = 16
    threads: int = 0
    show_progress: bool = True
    design: CohortDesign | None = None
    cells: bool = True
    adjust: str | tuple[str, ...] = ("site",)

    def __post_init__(self) -> None:
        if self.patients < 4:
            raise InvalidArgumentError(f"the demo needs at least 4 patients, got {self.patients}")
        if self.second_patients is not None and self.second_patients < 0:
            raise InvalidArgumentError("second_patients must be >= 0")


@dataclass
class DemoResult:
    """What the demo produced: the recovery table, report path, stage timings, results."""

    out_dir: Path
    recovery: pd.DataFrame
    report: Path | None
    timings: dict[str, float]
    results: dict[str, Any] = field(default_factory=dict)


def prepare_features(features: pd.DataFrame, wanted: list[str], what: str
                     ) -> tuple[pd.DataFrame, list[str]]:
    """Keeps id columns and the wanted features; drops features with NaN or no variation.

    NaN comes from a slide where a feature is undefined (e.g. tumour density without any
    CK-positive region); the statistics layer refuses NaN, and imputing would invent data.
    The background channels' features of the wanted metrics (``TRITC.density`` ...) stay in
    the table, outside the returned names: the statistics test them as negative controls. A
    table without them (a ground truth rendered without background) simply has no controls.
    """
    present = [f for f in wanted if f in features.columns]
    values = features[present].to_numpy(float)
    empty = ~np.isfinite(values).any(axis=1)
    if empty.any():
        warnings.warn(f"demo: {what}: no features (no tissue found) on slide(s) "
                      f"{list(features['slide_id'][empty])[:10]}; left out", VirtimeWarning,
                      stacklevel=2)
        features = features[~empty]
    bad = [f for f in present if not np.isfinite(features[f].to_numpy(float)).all()]
    if bad:
        warnings.warn(f"demo: {what}: features undefined on some slides, left out: {bad}",
                      VirtimeWarning, stacklevel=2)
    keep = [f for f in present if f not in bad]
    flat = [f for f in keep if np.ptp(features[f].to_numpy(float)) == 0] if len(features) else keep
    if flat:
        log.info("demo: %s: constant features left out (nothing to test): %s", what, flat)
    keep = [f for f in keep if f not in flat]
    return features[["slide_id", "patient_id", *keep, *_controls(features, keep)]].copy(), keep


def _controls(features: pd.DataFrame, keep: list[str]) -> list[str]:
    """Background-channel columns of the metrics in ``keep``, defined and varying on every slide."""
    from virtime.stats.validation import is_control_feature

    metrics = {f.rpartition(".")[2] for f in keep}
    out = []
    for c in features.columns:
        if isinstance(c, str) and is_control_feature(c) and c.rpartition(".")[2] in metrics:
            v = features[c].to_numpy(float)
            if len(v) and np.isfinite(v).all() and np.ptp(v) > 0:
                out.append(c)
    return out


def _model_geometry(model: Any) -> tuple[float, int]:
    card = getattr(model, "card", None)
    if card is None:
        raise InvalidArgumentError("demo: the model has no card (load it with virtime.models)")
    return float(card.input_mpp), int(card.window)


def _translate_all(slides: pd.DataFrame, model: Any, out: Path, cfg: DemoConfig, tile: int,
                   desc: str, engine_box: dict) -> int:
    """Translates every slide not yet done; builds the engine on first need and keeps it."""
    from virtime.translation import TranslateConfig, is_translated, translate

    tcfg = TranslateConfig(backend=cfg.backend, precision=cfg.precision,
                           window_batch=cfg.window_batch, threads=cfg.threads,
                           tile_size=tile, output_mpp=cfg.output_mpp, show_progress=False,
                           thumbnail_channels=("DAPI", "CD8", "CK"), cells=cfg.cells)
    done = 0
    with progress(slides.itertuples(index=False), total=len(slides), desc=desc, unit="slide",
                  enabled=cfg.show_progress) as bar:
        for r in bar:
            if is_translated(out / r.slide_id):
                continue
            if "engine" not in engine_box:
                from virtime.engines import create_engine

                _, window = _model_geometry(model)
                engine_box["engine"] = create_engine(model, backend=cfg.backend,
                                                     precision=cfg.precision,
                                                     max_batch=cfg.window_batch, window=window)
            translate(r.path, model, out, tcfg, slide_id=r.slide_id, engine=engine_box["engine"])
            done += 1
    return done


def _virtual_features(slides: pd.DataFrame, out: Path) -> pd.DataFrame:
    from virtime.features import read_features

    frames = []
    for r in slides.itertuples(index=False):
        df, _ = read_features(out / r.slide_id / "features.parquet")
        frames.append(df.assign(slide_id=r.slide_id, patient_id=r.patient_id))
    return pd.concat(frames, ignore_index=True)


def _fidelity(truth: pd.DataFrame, virtual: pd.DataFrame, feats: list[str]) -> pd.DataFrame:
    """Per feature: Spearman between ground-truth and virtual values over slides."""
    from scipy import stats

    m = truth.merge(virtual, on="slide_id", suffixes=("_truth", "_virtual"))
    rows = []
    for f in feats:
        a, b = m.get(f"{f}_truth"), m.get(f"{f}_virtual")
        if a is None or b is None:
            continue
        ok = np.isfinite(a.to_numpy(float)) & np.isfinite(b.to_numpy(float))
        rho = np.nan
        if ok.sum() >= 3 and np.ptp(a[ok]) > 0 and np.ptp(b[ok]) > 0:
            rho = float(stats.spearmanr(a[ok], b[ok]).statistic)
        rows.append({"feature": f, "spearman": rho, "mean_truth": float(np.nanmean(a)),
                         "mean_virtual": float(np.nanmean(b))})
    return pd.DataFrame(rows, columns=["feature", "spearman", "mean_truth", "mean_virtual"])


def _analyse(features: pd.DataFrame, clinical: pd.DataFrame, feats: list[str], cfg: DemoConfig,
             label: str) -> dict[str, Any]:
    from virtime.stats import associate, join_features, survival_analysis

    if not feats or features.empty:
        warnings.warn(f"demo: {label}: no usable features; analysis skipped", VirtimeWarning,
                      stacklevel=2)
        return {"cohort": None, "assoc": None, "surv": None}
    cohort = join_features(features, clinical)
    adjust = cfg.adjust
    if isinstance(adjust, tuple):  # the demo's covariates, as far as this cohort has them
        adjust = tuple(c for c in adjust if c in cohort.data.columns) or "none"
    assoc = associate(cohort, features=tuple(feats), alpha=cfg.alpha, adjust=adjust,
                      show_progress=cfg.show_progress)
    surv = None
    if cohort.has_survival:
        surv = survival_analysis(cohort, features=tuple(feats), show_progress=cfg.show_progress)
    log.info("%s: %d tests, %d significant", label, len(assoc.summary),
             int((assoc.summary["q"] < cfg.alpha).sum()))
    return {"cohort": cohort, "assoc": assoc, "surv": surv}


def _analyse_cells(cohort: Any, cfg: DemoConfig) -> dict[str, Any] | None:
    """Associations and survival on the cell densities of cohort A (None without cell features)."""
    from virtime.demo.recovery import CELL_FEATURES

    feats = _virtual_features(cohort.slides, cohort.root / "virtual")
    wanted = [f for f in CELL_FEATURES.values() if f in feats.columns]
    if not wanted:
        log.info("demo: no cell features (translated without cells); cell analysis skipped")
        return None
    with warnings.catch_warnings():  # auxiliary: omissions are logged, not warned
        warnings.simplefilter("ignore", UserWarning)
        table, usable = prepare_features(feats, wanted, "virtual cells")
    if not usable:
        log.info("demo: no usable cell features (too few cells); cell analysis skipped")
        return None
    return _analyse(table, cohort.clinical, usable, cfg, "virtual cells")


def run_demo(model: Any = None, output: str | os.PathLike[str] = "demo_out",
             config: DemoConfig | None = None) -> DemoResult:
    """Runs the whole demo into ``output`` (resumable) and returns the recovery table.

    The arguments come in the order ``(model, output, config)``, as in
    :func:`~virtime.translation.translate` (the demo makes its own slides, so there is no
    slide argument).

    Parameters
    ----------
    model
        Any translator with a model card (default: the bundled demo checkpoint).
    output
        Output folder (``demo_out`` by default).
    config
        :class:`DemoConfig`; the default is the README's demo.
    """
    from virtime.demo.recovery import recovery_table
    from virtime.simulate.cohort_render import simulate_cohort

    if isinstance(model, (str, os.PathLike)):
        raise InvalidArgumentError(f"run_demo: model is a translator, not a path ({model}); "
                                   f"load it with virtime.load_model, or pass None for the "
                                   f"bundled demo model")
    cfg = config or DemoConfig()
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    if model is None:
        from virtime.models import load_demo

        model = load_demo()
    mpp, window = _model_geometry(model)
    tile = 2 * window if cfg.slide_px >= 2 * window else window
    if cfg.slide_px < window:
        raise InvalidArgumentError(f"demo: slide_px {cfg.slide_px} is smaller than the model "
                                   f"window {window}")
    design = cfg.design or default_design()
    n_b = (cfg.patients * 2) // 5 if cfg.second_patients is None else cfg.second_patients
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    cohorts = {"A": simulate_cohort(out / "cohort_a", cfg.patients, design=design, seed=cfg.seed,
                                    slide_px=cfg.slide_px, mpp=mpp, feature_mpp=cfg.output_mpp,
                                    site=0, prefix="A", show_progress=cfg.show_progress)}
    if n_b:
        cohorts["B"] = simulate_cohort(out / "cohort_b", n_b, design=design, seed=cfg.seed + 1,
                                       slide_px=cfg.slide_px, mpp=mpp, feature_mpp=cfg.output_mpp,
                                       site=1, prefix="B", show_progress=cfg.show_progress)
    timings["simulate"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    engine_box: dict = {}
    try:
        for name, c in cohorts.items():
            _translate_all(c.slides, model, c.root / "virtual", cfg, tile,
                           f"translate cohort {name}", engine_box)
    finally:
        if "engine" in engine_box:
            engine_box["engine"].close()
    timings["translate"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    wanted = analysed_features()
    truth_a, feats_truth = prepare_features(cohorts["A"].truth_features(), wanted,
                                            "ground-truth mIF")
    virt = {n: prepare_features(_virtual_features(c.slides, c.root / "virtual"), wanted,
                                f"virtual mIF, cohort {n}") for n, c in cohorts.items()}
    res_truth = _analyse(truth_a, cohorts["A"].clinical, feats_truth, cfg, "ground truth")
    res_virtual = _analyse(virt["A"][0], cohorts["A"].clinical, virt["A"][1], cfg, "virtual")
    validation = None
    if "B" in cohorts:
        from virtime.stats import cross_cohort_validation

        res_b = _analyse(virt["B"][0], cohorts["B"].clinical, virt["B"][1], cfg, "virtual B")
        shared = [f for f in virt["A"][1] if f in virt["B"][1]]
        if res_virtual["cohort"] is not None and res_b["cohort"] is not None and shared:
            validation = cross_cohort_validation(res_virtual["cohort"], res_b["cohort"],
                                                 res_virtual["assoc"], res_b["assoc"],
                                                 features=[f for f in shared if
                                                           f.split(".")[1] == "density"],
                                                 alpha=cfg.alpha)
    res_cells = _analyse_cells(cohorts["A"], cfg) if cfg.cells else None
    site = _site_predictability({"ground-truth": res_truth, "virtual": res_virtual})
    timings["analyse"] = time.perf_counter() - t0
    truth = cohorts["A"].truth
    recovery = recovery_table(truth, alpha=cfg.alpha,
                              ground_truth_assoc=res_truth["assoc"],
                              virtual_assoc=res_virtual["assoc"],
                              ground_truth_surv=res_truth["surv"],
                              virtual_surv=res_virtual["surv"])
    if res_cells is not None:  # planted effects recovered through cell densities
        from virtime.demo.recovery import cell_truth

        recovery = pd.concat([recovery, recovery_table(
            cell_truth(truth), alpha=cfg.alpha, virtual_cells_assoc=res_cells["assoc"],
            virtual_cells_surv=res_cells["surv"])], ignore_index=True)
    fidelity = _fidelity(truth_a, virt["A"][0], wanted)
    t0 = time.perf_counter()
    _write_tables(out, recovery, fidelity, res_truth, res_virtual, validation, res_cells)
    if len(site):
        from virtime.stats.io import write_table

        write_table(site, out / "site_predictability.csv")
    from virtime.demo.report import demo_report

    report = demo_report(out / "report.html", cfg=cfg, model=model, truth=truth,
                         recovery=recovery, fidelity=fidelity, res_truth=res_truth,
                         res_virtual=res_virtual, validation=validation,
                         n_patients={k: len(c.clinical) for k, c in cohorts.items()})
    timings["report"] = time.perf_counter() - t0
    summary = {"config": {k: v for k, v in asdict(cfg).items() if k != "design"},
               "timings_seconds": {k: round(v, 2) for k, v in timings.items()},
               "site_predictability": site.to_dict(orient="records"),
               "report": str(report)}
    from virtime.io import atomic_write_bytes

    atomic_write_bytes(out / "demo_summary.json", json.dumps(summary, indent=2).encode())
    return DemoResult(out, recovery, report, timings,
                      {"truth": res_truth, "virtual": res_virtual, "validation": validation,
                       "virtual_cells": res_cells, "site_predictability": site,
                       "fidelity": fidelity, "truth_table": truth})


def _site_predictability(results: dict[str, dict]) -> pd.DataFrame:
    """Balanced accuracy of predicting the site from each source's features (cohort A): the
    artefact's stain look makes the site visible in the virtual features, not in the tissue."""
    from virtime.stats.site import find_site_column, site_predictability

    rows = []
    for source, res in results.items():
        cohort = res["cohort"]
        if cohort is None or find_site_column(cohort) is None:
            continue
        sp = site_predictability(cohort, warn=False)
        rows.append({"source": source, "site_column": sp.site_column,
                     "balanced_accuracy": sp.balanced_accuracy, "chance": sp.chance,
                     "threshold": sp.threshold, "warning": sp.warn, "n": sp.n})
    return pd.DataFrame(rows, columns=["source", "site_column", "balanced_accuracy", "chance",
                                       "threshold", "warning", "n"])


def _write_tables(out: Path, recovery: pd.DataFrame, fidelity: pd.DataFrame, res_truth: dict,
                  res_virtual: dict, validation: Any, res_cells: dict | None = None) -> None:
    tables = {"recovery.csv": recovery, "fidelity.csv": fidelity}
    for name, res in (("ground_truth", res_truth), ("virtual", res_virtual),
                      ("virtual_cells", res_cells or {"assoc": None, "surv": None})):
        if res["assoc"] is not None:
            tables[f"associations_{name}.csv"] = res["assoc"].summary
        if res["surv"] is not None:
            tables[f"survival_{name}.csv"] = res["surv"].summary
    if validation is not None:
        tables["cross_cohort.csv"] = validation.summary
    from virtime.stats.io import write_table

    for name, df in tables.items():
        write_table(df, out / name)
