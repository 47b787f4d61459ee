"""The planted site artefact: the demo translator reads the site's stain look as a channel shift
(the tissue and its ground truth are unchanged), the naive analysis of such features finds the
artefact, and the site-adjusted analysis does not, at no cost in power on the planted biology."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from virtime.channels import CHANNEL_NAMES, PROTEIN_CHANNELS
from virtime.simulate.cohort import (
    SiteArtefact,
    analysed_features,
    default_design,
    draw_patients,
    truth_table,
)


def test_truth_table_marks_every_other_feature_of_the_artefact_biomarker():
    design = default_design()
    art = design.artefact
    truth = truth_table(design)
    keys = ["level", "group", "feature", "attribute"]
    assert not truth.duplicated(keys).any()
    rows = truth[truth["role"] == "artefact"]
    assert set(rows["attribute"]) == {art.attribute} and set(rows["direction"]) == {"either"}
    kmt2d = truth[truth["attribute"] == art.attribute]
    # every (group, feature) of the biomarker is either implied by the tissue or an artefact
    n_groups = 1 + len(design.cancer_types) + len(design.subtypes)
    assert len(kmt2d) == n_groups * len(analysed_features())
    assert "artefact" in set(kmt2d["role"]) <= {"implied", "artefact"}
    assert set(truth.loc[truth["attribute"] != art.attribute, "role"]) == {"primary", "implied"}


def test_artefact_site_is_its_own_random_stream():
    design = default_design()
    a, bio_a = draw_patients(200, design, seed=4)
    b, bio_b = draw_patients(200, replace(design, artefact=None), seed=4)
    ref = (a["site"] == design.artefact.reference).to_numpy()
    assert "site" not in b.columns
    cols = [c for c in b.columns if c != design.artefact.attribute]
    pd.testing.assert_frame_equal(a[cols], b[cols])
    assert (a.loc[ref, "KMT2D"] == b.loc[ref, "KMT2D"]).all()
    assert (a["KMT2D"] >= b["KMT2D"]).all()  # the site only adds carriers
    assert all(replace(x, stain=(1.0, 1.0)) == y for x, y in zip(bio_a, bio_b))


def test_bad_artefact_is_refused():
    from virtime.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match="share"):
        SiteArtefact(share=1.5)
    with pytest.raises(InvalidArgumentError, match="without planted effects"):
        replace(default_design(), artefact=SiteArtefact(attribute="MSI-high"))


@pytest.mark.slow
def test_demo_translator_reads_the_stain_look_as_a_channel_shift():
    """Same tissue, two stain looks: identical ground truth, a shifted virtual channel."""
    from virtime.evaluation.evaluate import predict_probs
    from virtime.models import load_demo
    from virtime.simulate.cohort_render import render_patient_slide

    model = load_demo()
    art = default_design().artefact
    _, bio = draw_patients(4, seed=1)
    pos = {"reference": [], "artefact": []}
    for i, b in enumerate(bio):
        for look, stain in (("reference", (1.0, 1.0)), ("artefact", (art.h_scale, art.e_scale))):
            rgb, targets, tissue = render_patient_slide(
                replace(b, stain=stain), 256, 0.5, np.random.default_rng(100 + i))
            pos.setdefault(f"targets_{look}", []).append(targets)
            probs = predict_probs(model, rgb[None])[0]
            pos[look].append(((probs > 0.5) & tissue[None]).sum(axis=(1, 2)) / tissue.sum())
    np.testing.assert_array_equal(np.stack(pos["targets_reference"]),
                                  np.stack(pos["targets_artefact"]))  # the tissue is unchanged
    ref, shifted = np.mean(pos["reference"], axis=0), np.mean(pos["artefact"], axis=0)
    protein = [CHANNEL_NAMES.index(c) for c in PROTEIN_CHANNELS]
    log2 = np.log2((shifted[protein] + 1e-4) / (ref[protein] + 1e-4))
    assert np.abs(log2).max() >= 0.5, dict(zip(PROTEIN_CHANNELS, np.round(log2, 2)))


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:demo.*:UserWarning")
def test_naive_analysis_finds_the_artefact_and_the_site_adjusted_one_does_not(tmp_path):
    """Ground-truth features of a simulated cohort, with the artefact site's look applied to the
    channels the demo translator shifts (x0.5, as it reads strong hematoxylin)."""
    from virtime.demo.recovery import recovery_table
    from virtime.demo.run import prepare_features
    from virtime.simulate.cohort_render import simulate_cohort
    from virtime.stats import associate, join_features

    c = simulate_cohort(tmp_path / "c", 300, slide_px=256, write_slides=False,
                        show_progress=False, seed=5)
    feats, names = prepare_features(c.truth_features(), analysed_features(), "truth")
    site = feats["patient_id"].map(dict(zip(c.clinical["patient_id"], c.clinical["site"])))
    looked = feats.copy()
    for ch in ("CD20", "CD68", "CD16", "PD-1", "CD11c"):
        looked.loc[(site == "site-2").to_numpy(), f"{ch}.density"] *= 0.5
    cohort = join_features(looked, c.clinical)
    res = associate(cohort, features=tuple(names), adjust="site")
    rec = recovery_table(c.truth, virtual_assoc=res).set_index(["analysis", "level"])
    naive, adj = rec.loc["associations"], rec.loc["associations (adjusted)"]
    assert naive["artefact"].sum() >= 1
    assert adj["artefact"].sum() == 0
    assert (adj["power"] >= naive["power"] - 0.05).all()
    # on the unshifted ground truth the artefact is invisible to both
    plain = recovery_table(c.truth, virtual_assoc=associate(
        join_features(feats, c.clinical), features=tuple(names), adjust="site"))
    assert plain["artefact"].sum() == 0
