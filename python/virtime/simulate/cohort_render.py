"""Renders a virtual cohort to disk: slides, ground-truth mIF, clinical table and truth table.

Layout of ``simulate_cohort(output, ...)``::

    output/clinical.csv         one row per patient (the columns virtime.stats reads), with the
                                patient's ``slide_id`` when there is one slide per patient, so
                                it joins a ``features --merge`` table (slide ids only) as is
    output/slides.csv           slide_id, patient_id, path
    output/truth.csv            planted (primary) and implied associations
    output/slides/<id>.svs      pyramidal Aperio TIFF (OpenSlide opens it)
    output/truth_mif/<id>.npz   ground-truth mIF at the feature mpp: uint8 (23, h, w) positive
                                share x 255 per pixel, and the tissue mask
    output/truth_features/<id>.parquet   features of the ground-truth mIF (one row)

Each slide is drawn from its own seed (cohort seed, patient, slide), so a rerun skips the slides
already on disk and redraws nothing else. The ground-truth mIF goes through the same pooling as
the translator's canvas (block mean of the binary targets, ``floor(255 x + 1/2)``) and the same
feature code (:func:`virtime.features.compute_slide_features`), so truth and virtual features
differ only by what the translator gets wrong.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from virtime._progress import progress
from virtime.errors import InvalidArgumentError
from virtime.simulate.cohort import (
    CohortDesign,
    PatientBiology,
    default_design,
    draw_patients,
    truth_table,
)
from virtime.simulate.tissue import Scanner, render_tissue

__all__ = [
    "SimulatedCohort",
    "pool_targets",
    "render_patient_slide",
    "simulate_cohort",
    "site_scanner",
    "truth_features_table",
]

log = logging.getLogger(__name__)


@dataclass
class SimulatedCohort:
    """Paths and tables of a simulated cohort (see the module docstring for the layout)."""

    root: Path
    clinical: pd.DataFrame
    slides: pd.DataFrame
    truth: pd.DataFrame
    design: CohortDesign
    rendered: int = 0
    skipped: int = 0

    def truth_features(self) -> pd.DataFrame:
        """Ground-truth features of every slide, with ``slide_id`` and ``patient_id``."""
        return truth_features_table(self.root, self.slides)


def site_scanner(site: int, rng: np.random.Generator) -> Scanner:
    """A slide's scanner: small per-slide jitter around the site's stain look.

    Site 0 is the reference lab; other sites shift hematoxylin/eosin strength, stain hue and
    white level (a second scanner and lab, the cross-cohort setting).
    """
    s = Scanner.random(rng, jitter=0.03)
    s = replace(s, h_scale=float(rng.uniform(0.92, 1.08)), e_scale=float(rng.uniform(0.92, 1.08)))
    if site == 0:
        return s
    shift = np.random.default_rng(site)
    h = np.asarray(s.h_vector) + shift.normal(0, 0.06, 3)
    e = np.asarray(s.e_vector) + shift.normal(0, 0.06, 3)
    h, e = np.clip(h, 0.02, None), np.clip(e, 0.02, None)
    return replace(s, h_vector=tuple(h / np.linalg.norm(h)), e_vector=tuple(e / np.linalg.norm(e)),
                   h_scale=s.h_scale * 1.15, e_scale=s.e_scale * 0.85,
                   background=tuple(np.clip(np.asarray(s.background) + (-8, -3, 4), 200, 255)))


def _tissue_shape(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A rounded tissue piece covering ~75% of the slide, glass around it."""
    cy, cx = h / 2 + rng.normal(0, h * 0.02), w / 2 + rng.normal(0, w * 0.02)
    ry, rx = h * rng.uniform(0.45, 0.5), w * rng.uniform(0.45, 0.5)
    phase = rng.uniform(0, 6.3)
    yy = ((np.arange(h, dtype=np.float32) - cy) / ry)[:, None]
    xx = ((np.arange(w, dtype=np.float32) - cx) / rx)[None, :]
    ang = np.arctan2(yy * ry, xx * rx)
    wobble = 1 + 0.05 * np.sin(3 * ang + phase) + 0.03 * np.sin(5 * ang)
    return yy**4 + xx**4 <= wobble**4


def pool_targets(targets: np.ndarray, factor: int) -> np.ndarray:
    """Block mean of binary targets over ``factor`` x ``factor`` pixels, as uint8 x 255."""
    c, h, w = targets.shape
    hh, ww = h // factor, w // factor
    block = targets[:, : hh * factor, : ww * factor].reshape(c, hh, factor, ww, factor)
    mean = block.mean(axis=(2, 4), dtype=np.float64)
    return np.floor(255.0 * mean + 0.5).astype(np.uint8)


def render_patient_slide(patient: PatientBiology, size_px: int, mpp: float,
                         rng: np.random.Generator, site: int = 0
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """H&E (uint8 HxWx3, glass outside the tissue), targets (bool 23xHxW), tissue mask (HxW)."""
    tissue = _tissue_shape(size_px, size_px, rng)
    scanner = site_scanner(site, rng)
    h, e = patient.stain  # a site artefact's stain look: the H&E changes, the tissue does not
    if (h, e) != (1.0, 1.0):
        scanner = replace(scanner, h_scale=scanner.h_scale * h, e_scale=scanner.e_scale * e)
    rgb, targets, _ = render_tissue((size_px, size_px), patient.composition(), mpp=mpp, rng=rng,
                                    scanner=scanner)
    scanner_bg = np.asarray([246, 245, 248], np.float32)
    glass = scanner_bg + rng.normal(0, 1.5, (size_px, size_px, 1)).astype(np.float32)
    rgb = np.where(tissue[..., None], rgb, np.clip(glass, 0, 255).astype(np.uint8))
    targets &= tissue[None]
    return rgb, targets, tissue


def _slide_seed(seed: int, patient_index: int, slide_index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, 4242, patient_index, slide_index]))


def _atomic_npz(path: Path, **arrays: np.ndarray) -> None:
    from virtime.io import atomic_path

    with atomic_path(path) as tmp, open(tmp, "wb") as fh:  # a handle: savez adds no suffix
        np.savez_compressed(fh, **arrays)


def simulate_cohort(
    output: str | os.PathLike[str],
    n_patients: int,
    *,
    design: CohortDesign | None = None,
    seed: int = 0,
    slide_px: int = 768,
    mpp: float = 0.5,
    feature_mpp: float = 1.0,
    slides_per_patient: int = 1,
    site: int = 0,
    prefix: str = "P",
    write_slides: bool = True,
    workers: int = 0,
    show_progress: bool = True,
) -> SimulatedCohort:
    """Draws a cohort and renders every slide and its ground-truth mIF features (resumable).

    Parameters
    ----------
    output
        Folder of the cohort (created).
    n_patients, design, seed, prefix
        Who is drawn (see :func:`virtime.simulate.cohort.draw_patients`); ``prefix`` keeps patient
        ids of two cohorts apart.
    slide_px, mpp
        Slide side in pixels at ``mpp`` µm/px (render at the translator's input mpp).
    feature_mpp
        Resolution of the ground-truth map the features are computed on (match the
        translation's ``output_mpp``).
    slides_per_patient, site
        Slides per patient; scanner site (0 reference, >0 another lab's stain look).
    write_slides
        False skips the slide files (ground truth only: fast statistics checks).
    workers
        Rendering threads (0: one per core; fewer than 2 renders in this thread). Threads, not
        processes: a spawned process re-imports the caller's script, so a plain script without
        an ``if __name__ == "__main__":`` guard would die (BrokenProcessPool); the rendering is
        numpy work that releases the GIL for much of its time. Features of the ground truth are
        computed in the calling thread, so the numba kernels compile once.
    """
    design = design or default_design()
    factor = round(feature_mpp / mpp)
    if factor < 1 or abs(factor * mpp - feature_mpp) > 1e-6 * feature_mpp:
        raise InvalidArgumentError(f"feature_mpp {feature_mpp} must be a whole multiple of mpp {mpp}")
    if slide_px < 64 or slides_per_patient < 1:
        raise InvalidArgumentError("slide_px must be >= 64 and slides_per_patient >= 1")
    root = Path(output)
    for sub in ("slides", "truth_mif", "truth_features"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    _check_manifest(root, {"n_patients": n_patients, "seed": seed, "slide_px": slide_px,
                           "mpp": mpp, "feature_mpp": feature_mpp,
                           "slides_per_patient": slides_per_patient, "site": site,
                           "prefix": prefix, "design": repr(design)})
    clinical, biology = draw_patients(n_patients, design, seed=seed, prefix=prefix)
    truth = truth_table(design)
    rows = []
    for i, bio in enumerate(biology):
        for k in range(slides_per_patient):
            sid = f"{bio.patient_id}-S{k + 1}"
            rows.append({"slide_id": sid, "patient_id": bio.patient_id, "patient_index": i, "slide": k,
                             "path": str(root / "slides" / f"{sid}.svs")})
    slides = pd.DataFrame(rows)
    if slides_per_patient == 1:  # the slide -> patient map a per-slide features table needs
        clinical.insert(1, "slide_id", slides["slide_id"].to_numpy())
    _write_csv(clinical, root / "clinical.csv")
    _write_csv(slides.drop(columns=["patient_index", "slide"]), root / "slides.csv")
    _write_csv(truth, root / "truth.csv")
    todo = []
    for r in slides.itertuples(index=False):
        feat_path = root / "truth_features" / f"{r.slide_id}.parquet"
        if feat_path.is_file() and (not write_slides or Path(r.path).is_file()):
            continue
        todo.append((r.slide_id, r.patient_id, r.path, biology[r.patient_index],
                     (seed, r.patient_index, r.slide), slide_px, mpp, factor, site, write_slides,
                     str(root / "truth_mif" / f"{r.slide_id}.npz")))
    skipped = len(slides) - len(todo)
    n_workers = min(workers if workers else (os.cpu_count() or 1), len(todo) // 4)
    with progress(total=len(todo), desc=f"simulate {root.name}", unit="slide",
                  enabled=show_progress) as bar:
        if n_workers >= 2:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(n_workers, thread_name_prefix="virtime-render") as pool:
                for res in pool.map(_render_one, todo):
                    _write_truth_features(root, *res, feature_mpp)
                    bar.update(1)
        else:
            for job in todo:
                _write_truth_features(root, *_render_one(job), feature_mpp)
                bar.update(1)
    rendered = len(todo)
    log.info("cohort %s: %d slides rendered, %d already on disk", root, rendered, skipped)
    return SimulatedCohort(root, clinical, slides.drop(columns=["patient_index", "slide"]), truth,
                           design, rendered, skipped)


def _check_manifest(root: Path, settings: dict) -> None:
    """Refuses to resume a cohort folder made with other settings (it would mix two cohorts)."""
    import hashlib
    import json

    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
    path = root / "cohort.json"
    if path.is_file():
        try:
            old = json.loads(path.read_text()).get("sha256")
        except (OSError, ValueError):
            old = None
        if old != digest:
            raise InvalidArgumentError(
                f"{root}: holds a cohort simulated with other settings; use another output "
                "folder or delete this one")
        return
    from virtime.io import atomic_write_bytes

    record = {"sha256": digest, **{k: v for k, v in settings.items() if k != "design"}}
    atomic_write_bytes(path, json.dumps(record, indent=2).encode())


def _render_one(job: tuple) -> tuple[str, str, np.ndarray, np.ndarray]:
    """Worker: renders one slide, writes it and its ground-truth map; returns the map.

    Thread-safe: every slide has its own generator, output paths and arrays."""
    from virtime.simulate.slides import write_slide

    sid, pid, path, bio, seeds, slide_px, mpp, factor, site, write_slides, npz = job
    rng = _slide_seed(*seeds)
    rgb, targets, tissue = render_patient_slide(bio, slide_px, mpp, rng, site)
    if write_slides:
        write_slide(path, rgb, mpp, fmt="aperio")
    prob = pool_targets(targets, factor)
    tis = pool_targets(tissue[None], factor)[0] >= 128
    _atomic_npz(Path(npz), prob=prob, tissue=tis)
    return sid, pid, prob, tis


def _write_truth_features(root: Path, sid: str, pid: str, prob: np.ndarray, tis: np.ndarray,
                          feature_mpp: float) -> None:
    from virtime.features import compute_slide_features, write_features

    feats = compute_slide_features(prob, tis, feature_mpp)
    write_features([{"slide_id": sid, "patient_id": pid, **feats}],
                   root / "truth_features" / f"{sid}.parquet", model_hash="ground-truth",
                   settings={"mpp": feature_mpp, "bin_um": 64.0, "threshold": 0.5})


def truth_features_table(root: str | os.PathLike[str], slides: pd.DataFrame) -> pd.DataFrame:
    """Concatenates the per-slide ground-truth feature rows of a simulated cohort."""
    from virtime.features import read_features

    frames = [read_features(Path(root) / "truth_features" / f"{sid}.parquet")[0]
              for sid in slides["slide_id"]]
    return pd.concat(frames, ignore_index=True)


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    from virtime.stats.io import write_table

    write_table(frame, path)
