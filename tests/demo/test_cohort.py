"""The cohort simulator: prevalences, planted biology in the tissue, survival, truth table, disk."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from virtime.errors import InvalidArgumentError
from virtime.simulate.cohort import (
    PRIMARY_LOG2,
    analysed_features,
    default_design,
    draw_patients,
    truth_table,
)


@pytest.fixture(scope="module")
def big_cohort():
    return draw_patients(3000, seed=3)


def test_clinical_table_reads_and_prevalences_match(big_cohort):
    from virtime.stats import load_clinical

    clinical, bio = big_cohort
    table = load_clinical(clinical)
    assert table.attributes == {"stage": "stage", "KRAS": "binary", "KMT2D": "binary",
                                "MSI-high": "binary", "TMB-high": "binary"}
    design = default_design()
    art = design.artefact
    at_site = (clinical["site"] == art.site).to_numpy()
    assert set(clinical["site"]) == {art.site, art.reference}
    assert abs(at_site.mean() - art.share) < 4 * math.sqrt(art.share * (1 - art.share) / 3000)
    for spec in design.subtypes:
        sub = clinical[clinical["subtype"] == spec.code]
        share = len(sub) / len(clinical)
        w = spec.weight / sum(s.weight for s in design.subtypes)
        assert abs(share - w) < 4 * math.sqrt(w * (1 - w) / len(clinical))
        for marker, p in spec.prevalence.items():
            for site in (art.reference, art.site):
                q = min(1.0, p + art.extra_prevalence) if (
                    site == art.site and marker == art.attribute) else p
                part = sub[sub["site"] == site]
                se = math.sqrt(max(q * (1 - q), 1e-4) / len(part))
                assert abs(part[marker].mean() - q) < 4.5 * se, (spec.code, marker, site)
    assert [b.patient_id for b in bio] == list(clinical["patient_id"])
    # the artefact site's slides get its stain look; nothing else about its patients differs
    assert {b.stain for b, s in zip(bio, at_site) if s} == {(art.h_scale, art.e_scale)}
    assert {b.stain for b, s in zip(bio, at_site) if not s} == {(1.0, 1.0)}


def test_planted_density_and_marker_effects_in_composition(big_cohort):
    clinical, bio = big_cohort
    msi = clinical["MSI-high"].to_numpy() == 1
    log_cd8 = np.log([b.tumour["cd8_t"] for b in bio])
    scale = np.array([1.2 if b.subtype == "LUSC" else 1.0 for b in bio])
    resid = log_cd8 - np.log(150.0 * scale)
    # MSI-high multiplies intratumoural CD8 T cells by 4; spread is N(0, 0.6) on the log scale
    # for CD8 T cells (the design's override) and 0.3 for the others.
    assert resid[msi].mean() - resid[~msi].mean() == pytest.approx(math.log(4), abs=0.1)
    assert resid[~msi].std() == pytest.approx(0.6, abs=0.04)
    log_b = np.log([b.stroma["b_cell"] for b in bio])
    b_scale = np.array([0.7 if b.subtype == "READ" else 1.0 for b in bio])
    assert (log_b - np.log(180.0 * b_scale)).std() == pytest.approx(0.3, abs=0.03)
    # Stroma CD8 is untouched by MSI.
    s = np.log([b.stroma["cd8_t"] for b in bio])
    assert abs(s[msi].mean() - s[~msi].mean()) < 0.1
    # Independent compartments by default (Fisher-z, 4 SE around 0).
    r = np.corrcoef(resid[~msi], s[~msi])[0, 1]
    assert abs(math.atanh(r)) < 4 / math.sqrt((~msi).sum() - 3)
    # KRAS raises stromal plasma cells x3 in LUAD only.
    for code, fold in (("LUAD", 3.0), ("COAD", 1.0)):
        sel = (clinical["subtype"] == code).to_numpy()
        kras = clinical["KRAS"].to_numpy() == 1
        lp = np.log([b.stroma["plasma"] for b in bio])
        diff = lp[sel & kras].mean() - lp[sel & ~kras].mean()
        assert diff == pytest.approx(math.log(fold), abs=0.15)
    # Stage sets the Ki67 rate of tumour cells: 0.10 + 0.13 (stage - 1).
    for b, st in zip(bio[:50], clinical["stage"][:50]):
        k = {"I": 1, "II": 2, "III": 3, "IV": 4}[st]
        assert b.marker_prob["tumour"]["Ki67"] == pytest.approx(0.10 + 0.13 * (k - 1))


def test_survival_hazard_ratio_recovered_by_lifelines(big_cohort):
    from lifelines import CoxPHFitter

    clinical, bio = big_cohort
    design = default_design()
    eff = design.survival_effect
    z = np.array([b.hazard_log_density for b in bio]) / design.spread_of(eff.phenotype)
    df = pd.DataFrame({"t": clinical["os_time"], "e": clinical["os_event"], "z": z})
    fit = CoxPHFitter().fit(df, "t", "e")
    lo, hi = np.exp(fit.confidence_intervals_.loc["z"].to_numpy())
    assert lo < eff.hr_per_sd < hi
    assert math.exp(fit.params_["z"]) == pytest.approx(eff.hr_per_sd, rel=0.12)
    assert 0.3 < clinical["os_event"].mean() < 0.9


def test_truth_table_sizes_follow_the_planted_folds():
    truth = truth_table()
    prim = truth[truth["role"] == "primary"]
    # CD8 is only on CD8 T cells, so a x4 density inside nests is log2(4) = 2 in every subtype.
    rows = prim[(prim["feature"] == "CD8.tumour_density") & (prim["attribute"] == "MSI-high")
                & (prim["level"] == "subtype")]
    assert sorted(rows["group"]) == sorted(s.code for s in default_design().subtypes)
    assert np.allclose(rows["size"], 2.0)
    # CD138 marks only plasma cells, all in stroma here: x3 in LUAD.
    luad = prim[(prim["group"] == "LUAD") & (prim["attribute"] == "KRAS")]
    assert list(luad["feature"]) == ["CD138.density"]
    assert luad["size"].iloc[0] == pytest.approx(math.log2(3.0), abs=0.02)
    # No KRAS primary row in subtypes where the effect is not planted.
    assert prim[(prim["attribute"] == "KRAS") & (prim["level"] == "subtype")]["group"].tolist() \
        == ["LUAD"]
    assert (prim["size"].abs() >= PRIMARY_LOG2).all()
    assert set(prim["feature"]) <= set(analysed_features())
    assert not truth.duplicated(["level", "group", "feature", "attribute"]).any()


def test_null_design_plants_nothing():
    truth = truth_table(default_design().null())
    assert not (truth["role"] == "primary").any()
    assert not (truth["attribute"] == "overall survival").any()


@pytest.mark.slow
def test_simulated_cohort_on_disk_resumes_and_refuses_other_settings(tmp_path):
    from virtime.features import compute_slide_features
    from virtime.simulate.cohort_render import simulate_cohort
    from virtime.slide import Slide

    c = simulate_cohort(tmp_path / "c", 3, slide_px=256, show_progress=False, seed=5)
    assert c.rendered == 3 and c.skipped == 0
    feats = c.truth_features()
    assert list(feats["patient_id"]) == list(c.clinical["patient_id"])
    # The stored ground truth is the block mean of binary targets: recompute CD8 density by hand.
    npz = np.load(tmp_path / "c" / "truth_mif" / f"{c.slides.slide_id[0]}.npz")
    prob, tissue = npz["prob"], npz["tissue"]
    cd8 = prob[14]
    by_hand = ((cd8 >= 128) & tissue).sum() / tissue.sum()
    assert feats.loc[0, "CD8.density"] == pytest.approx(by_hand)
    assert compute_slide_features(prob, tissue, 1.0)["CD8.density"] == pytest.approx(by_hand)
    slide = Slide(c.slides.path[0])
    assert slide.dimensions == (256, 256) and slide.mpp == pytest.approx(0.5)
    again = simulate_cohort(tmp_path / "c", 3, slide_px=256, show_progress=False, seed=5)
    assert again.rendered == 0 and again.skipped == 3
    with pytest.raises(InvalidArgumentError, match="other settings"):
        simulate_cohort(tmp_path / "c", 3, slide_px=256, show_progress=False, seed=6)


@pytest.mark.parametrize("corr", [0.3, 0.6])
def test_compartment_correlation_is_drawn_with_the_spread_kept(corr):
    design = replace(default_design(), compartment_correlation=corr)
    clinical, bio = draw_patients(2000, design, seed=11)
    keep = (clinical["MSI-high"] == 0).to_numpy() & (clinical["subtype"] != "LUSC").to_numpy()
    t = np.log([b.tumour["cd8_t"] for b in bio])[keep]
    s = np.log([b.stroma["cd8_t"] for b in bio])[keep]
    r = np.corrcoef(t, s)[0, 1]
    assert abs(math.atanh(r) - math.atanh(corr)) < 4 / math.sqrt(keep.sum() - 3)
    assert t.std() == pytest.approx(design.spread_of("cd8_t"), rel=0.08)
    assert s.std() == pytest.approx(design.spread_of("cd8_t"), rel=0.08)


def test_nest_scale_is_drawn_in_the_design_range():
    design = replace(default_design(), nest_scale_um=(20.0, 30.0))
    _, bio = draw_patients(300, design, seed=4)
    scales = np.array([b.nest_scale_um for b in bio])
    assert scales.min() >= 20.0 and scales.max() <= 30.0
    # Uniform on [20, 30]: mean 25, SD 10 / sqrt(12); 4 standard errors.
    assert abs(scales.mean() - 25.0) < 4 * (10 / math.sqrt(12)) / math.sqrt(len(scales))
    with pytest.raises(InvalidArgumentError, match="nest_scale_um"):
        replace(default_design(), nest_scale_um=(80.0, 40.0))


def test_compartment_correlation_out_of_range_is_refused():
    with pytest.raises(InvalidArgumentError, match="compartment_correlation"):
        replace(default_design(), compartment_correlation=1.0)


def test_survival_truth_follows_the_compartment_correlation():
    """A doubling of intratumoural CD8 moves stromal CD8 by 2**c: its log2 size is c."""
    design = replace(default_design(), compartment_correlation=0.6)
    truth = truth_table(design)
    surv = truth[(truth["attribute"] == "overall survival") & (truth["level"] == "pan-cancer")]
    size = surv.set_index("feature")["size"]
    assert size["CD8.tumour_density"] == pytest.approx(1.0, abs=1e-9)
    assert size["CD8.stroma_density"] == pytest.approx(design.compartment_correlation, abs=1e-9)
    assert (surv["direction"] == "lower").all()  # more CD8, lower hazard (HR < 1)
    independent = truth_table(replace(design, compartment_correlation=0.0))
    ind = independent[(independent["attribute"] == "overall survival")
                      & (independent["level"] == "pan-cancer")]
    assert "CD8.stroma_density" not in set(ind["feature"])
