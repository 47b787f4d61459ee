"""Immune contexture on planted maps: inflamed, excluded, desert."""

from __future__ import annotations

import math

import numpy as np
import pytest

from virtime.features import ContextureConfig, SlideFeatureAccumulator

NAMES = ("CK", "CD3", "CD8")
B = 16  # bin side, px (bin_um 8 at 0.5 mpp)


def _planted(cd8_in_tumour: float, cd8_in_stroma: float, rng) -> dict:
    """Left half tumour (CK+), right half stroma; CD8 positive at the given pixel fractions."""
    H, W = 64, 128
    prob = np.zeros((3, H, W), np.uint8)
    prob[0, :, : W // 2] = 200
    for frac, sl in ((cd8_in_tumour, np.s_[:, : W // 2]), (cd8_in_stroma, np.s_[:, W // 2:])):
        region = prob[2][sl]
        region[rng.random(region.shape) < frac] = 255
    prob[1] = prob[2]  # CD3 = CD8 here
    acc = SlideFeatureAccumulator(0.5, bin_um=8.0, channels=NAMES)
    acc.add_tile(prob, np.ones((H, W), bool), 0, 0)
    res = acc.result()
    # independent reference: tumour = left half exactly (bins are aligned with it)
    res["_want_t"] = (prob[2][:, : W // 2] > 127).mean()
    res["_want_s"] = (prob[2][:, W // 2:] > 127).mean()
    return res


@pytest.mark.parametrize(
    "t,s,phenotype",
    [(0.05, 0.05, "inflamed"), (0.0, 0.05, "excluded"), (0.001, 0.001, "desert")],
)
def test_phenotypes(rng, t, s, phenotype):
    res = _planted(t, s, rng)
    assert res["immune.phenotype"] == phenotype
    assert math.isclose(res["tumour.area_fraction"], 0.5)
    assert math.isclose(res["CD8.tumour_density"], res["_want_t"])
    assert math.isclose(res["CD8.stroma_density"], res["_want_s"])
    if res["_want_s"] > 0:
        assert math.isclose(res["CD8.infiltration_ratio"], res["_want_t"] / res["_want_s"])
    assert res["CD3.tumour_density"] == res["CD8.tumour_density"]


def test_no_tumour_is_undetermined(rng):
    prob = np.zeros((3, 32, 32), np.uint8)
    prob[2] = 255
    acc = SlideFeatureAccumulator(0.5, bin_um=8.0, channels=NAMES,
                                  contexture=ContextureConfig(density_cutoff=0.01))
    acc.add_tile(prob, np.ones((32, 32), bool), 0, 0)
    res = acc.result()
    assert res["immune.phenotype"] == "undetermined" and res["tumour.area_fraction"] == 0.0
    assert math.isnan(res["CD8.tumour_density"]) and res["CD8.stroma_density"] == 1.0
