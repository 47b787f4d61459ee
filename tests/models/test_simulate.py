"""The tissue simulator: shapes, GigaTIME-style targets, planted morphology and densities."""

from __future__ import annotations

import numpy as np
import pytest

from virtime.channels import CHANNEL_NAMES, channel_index
from virtime.errors import InvalidArgumentError
from virtime.simulate.phenotypes import PHENOTYPES
from virtime.simulate.tissue import Composition, Scanner, render_tissue


@pytest.fixture(scope="module")
def region():
    return render_tissue((320, 288), mpp=0.5, rng=np.random.default_rng(7))


def test_shapes_and_types(region):
    rgb, targets, cells = region
    assert rgb.shape == (320, 288, 3) and rgb.dtype == np.uint8
    assert targets.shape == (23, 320, 288) and targets.dtype == bool
    assert set(CHANNEL_NAMES) <= set(cells.columns)
    assert cells.x.between(0, 288).all() and cells.y.between(0, 320).all()


def test_targets_follow_gigatime_masks(region):
    _, t, cells = region
    dapi = t[channel_index("DAPI")]
    for name in ("Ki67", "PHH3-B"):  # nuclear channels lie on nuclei
        assert not (t[channel_index(name)] & ~dapi).any()
    ck = t[channel_index("CK")]
    assert (ck & ~dapi).sum() > 0  # membrane channels reach past the nucleus
    # Every marker-positive channel in the table shows up, and absent markers stay empty.
    for k, name in enumerate(CHANNEL_NAMES):
        assert t[k].any() == bool(cells[name].any()) or cells[name].sum() <= 2


def test_morphology_carries_phenotype():
    comp = Composition(tumour_fraction=0.0, tumour={}, vessel_density=0.0,
                       stroma={"cd8_t": 1500.0, "macrophage": 700.0})
    rgb, t, _ = render_tissue(384, comp, mpp=0.5, rng=np.random.default_rng(3),
                              scanner=Scanner(noise=0.0))
    gray = rgb.mean(-1)
    nuc = t[channel_index("DAPI")]
    lymph = nuc & t[channel_index("CD8")]
    macro = nuc & t[channel_index("CD68")]
    assert gray[lymph].mean() < gray[macro].mean() - 20  # lymphocyte nuclei darker
    # Cytoplasm (expanded mask outside nucleus) of macrophages is paler than stroma around them
    macro_cyto = t[channel_index("CD68")] & ~nuc
    assert gray[macro_cyto].mean() > gray[lymph].mean() + 40


def test_density_matches_composition():
    comp = Composition(tumour_fraction=0.0, tumour={}, vessel_density=0.0,
                       stroma={"b_cell": 800.0})
    _, _, cells = render_tissue(400, comp, mpp=0.5, rng=np.random.default_rng(11))
    expected = 800.0 * (400 * 0.5e-3) ** 2  # cells/mm² x mm²
    assert abs((cells.phenotype == "b_cell").sum() - expected) < 4 * np.sqrt(expected)


def test_given_tumour_layout_and_planted_markers():
    mask = np.zeros((256, 256), bool)
    mask[:, :128] = True
    comp = Composition(marker_prob={"tumour": {"PD-L1": 1.0}})
    _, t, cells = render_tissue(256, comp, tumour_mask=mask, rng=np.random.default_rng(2))
    tum = cells[cells.phenotype == "tumour"]
    assert (tum.x < 128 + 12).all() and tum["PD-L1"].all()
    assert t[channel_index("CK")][:, :100].mean() > 10 * t[channel_index("CK")][:, 160:].mean()


def test_bad_composition():
    with pytest.raises(InvalidArgumentError, match="unknown phenotype"):
        Composition(stroma={"unicorn": 10.0})
    with pytest.raises(InvalidArgumentError):
        Composition(tumour_fraction=1.5)


def test_phenotype_table_defines_markers():
    assert PHENOTYPES["cd8_t"].markers["CD8"] == 1.0
    assert PHENOTYPES["macrophage"].markers["CD68"] == 1.0
    assert not PHENOTYPES["rbc"].nucleated
