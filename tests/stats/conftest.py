"""Synthetic cohorts made with numpy: features, clinical attributes and survival with planted effects."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from virtime.channels import PROTEIN_CHANNELS

SUBTYPES = {"LUNG": ("LUAD", "LUSC"), "BOWEL": ("COAD", "READ"),
            "BREAST": ("IDC", "ILC"), "SKIN": ("SKCM", "CSCC")}


def make_cohort(
    rng: np.random.Generator,
    per_subtype: int = 120,
    *,
    metrics: tuple[str, ...] = ("density",),
    plant: tuple[str, str, str, float] | None = None,
    hazard: dict[str, float] | None = None,
    slides_per_patient: int = 1,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(features, clinical) for 8 subtypes in 4 cancer types; independent features under H0.

    ``plant=(feature, biomarker, subtype, shift)`` adds ``shift`` (in SD) to the feature for
    biomarker-positive patients of that subtype only. ``hazard`` maps a feature to a log hazard
    ratio per SD used to draw exponential survival times (else survival is independent).
    """
    rows = []
    for ct, subs in SUBTYPES.items():
        for st in subs:
            for _ in range(per_subtype):
                rows.append((ct, st))
    n = len(rows)
    clin = pd.DataFrame(rows, columns=["cancer_type", "subtype"])
    clin.insert(0, "patient_id", [f"P{i:05d}" for i in range(n)])
    clin["stage"] = rng.choice(["I", "II", "IIIA", "IV"], size=n)
    clin["KRAS"] = rng.choice(["mutated", "wild-type"], size=n, p=[0.3, 0.7])
    clin["MSI"] = rng.integers(0, 2, size=n)
    clin["TMB"] = rng.gamma(2.0, 3.0, size=n)
    feats = {}
    for ch in PROTEIN_CHANNELS:
        for m in metrics:
            feats[f"{ch}.{m}"] = rng.normal(size=n)
    if plant is not None:
        feat, marker, subtype, shift = plant
        pos = clin[marker].isin(["mutated", 1]).to_numpy() & (clin["subtype"] == subtype).to_numpy()
        feats[feat] = feats[feat] + shift * pos
    lin = np.zeros(n)
    for f, beta in (hazard or {}).items():
        lin += beta * feats[f]
    t = rng.exponential(365.0 * np.exp(-lin))
    c = rng.exponential(2 * 365.0, size=n)
    clin["os_time"] = np.minimum(t, c).round(1)
    clin["os_event"] = (t <= c).astype(int)
    f = pd.DataFrame(feats)
    f.insert(0, "patient_id", clin["patient_id"])
    if slides_per_patient > 1:
        reps = []
        for k in range(slides_per_patient):
            r = f.copy()
            r.iloc[:, 1:] += rng.normal(scale=0.01, size=(n, f.shape[1] - 1))
            r.insert(0, "slide_id", [f"{p}-S{k}" for p in f["patient_id"]])
            reps.append(r)
        f = pd.concat(reps, ignore_index=True)
    else:
        f.insert(0, "slide_id", [f"{p}-S0" for p in f["patient_id"]])
    return f, clin


@pytest.fixture
def cohort_factory() -> Callable[..., tuple[pd.DataFrame, pd.DataFrame]]:
    """The :func:`make_cohort` function (call it with an rng)."""
    return make_cohort
