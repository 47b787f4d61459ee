"""Cell-level spatial statistics against brute-force numpy references."""

from __future__ import annotations

import numpy as np
import pandas as pd

from virtime.cells.features import (
    cell_features,
    colocalisation_z,
    nearest_distances,
    pair_counts,
)


def _points(rng, n=400, side=300.0, k=4):
    xy = rng.random((n, 2)) * side
    xy[: n // 4] = xy[: n // 4] * 0.3  # a cluster, so pairs are far from uniform
    return xy, rng.integers(0, k, n)


def _brute_counts(xy, labels, k, r):
    d = np.hypot(*(xy[:, None, :] - xy[None, :, :]).transpose(2, 0, 1))
    near = (d <= r) & ~np.eye(len(xy), dtype=bool)
    out = np.zeros((k, k), np.int64)
    i, j = np.nonzero(near)
    np.add.at(out, (labels[i], labels[j]), 1)
    return out


def test_pair_counts_match_brute_force(rng):
    xy, lab = _points(rng)
    for r in (5.0, 17.0, 60.0):
        got = pair_counts(xy[:, 0], xy[:, 1], lab[None], 4, r)[0]
        np.testing.assert_array_equal(got, _brute_counts(xy, lab, 4, r))


def test_colocalisation_z_matches_brute_force(rng):
    xy, lab = _points(rng, n=250)
    z = colocalisation_z(xy[:, 0], xy[:, 1], lab, 4, 20.0, n_perm=15, seed=3)
    perm_rng = np.random.default_rng(3)
    null = np.stack([_brute_counts(xy, perm_rng.permutation(lab), 4, 20.0) for _ in range(15)])
    obs = _brute_counts(xy, lab, 4, 20.0)
    ref = (obs - null.mean(0)) / null.std(0, ddof=1)
    np.testing.assert_allclose(z, ref)


def test_clustered_types_score_positive(rng):
    a = rng.normal(50, 5, (100, 2))
    b = rng.random((300, 2)) * 400
    xy = np.concatenate([a, b])
    lab = np.r_[np.zeros(100, int), np.ones(300, int)]
    z = colocalisation_z(xy[:, 0], xy[:, 1], lab, 2, 15.0, n_perm=30)
    assert z[0, 0] > 5 and z[0, 1] < 0


def test_nearest_distances_match_brute_force(rng):
    src, dst = rng.random((200, 2)) * 100, rng.random((50, 2)) * 100
    ref = np.hypot(*(src[:, None] - dst[None]).transpose(2, 0, 1)).min(1)
    np.testing.assert_allclose(nearest_distances(src, dst), ref)
    assert np.isinf(nearest_distances(src, np.zeros((0, 2)))).all()


def test_cell_features_against_hand_counts(rng):
    n = 600
    phen = rng.choice(["tumour", "cd8_t", "cd4_t", "macrophage", "other"], n)
    comp = np.where(rng.random(n) < 0.5, "tumour", "stroma")
    xy = rng.random((n, 2)) * 1000.0
    cells = pd.DataFrame({"x_um": xy[:, 0], "y_um": xy[:, 1], "phenotype": phen,
                          "compartment": comp, "proliferating": rng.random(n) < 0.2,
                          "pdl1_tumour": (phen == "tumour") & (rng.random(n) < 0.3)})
    f = cell_features(cells, tissue_mm2=2.5, tumour_mm2=0.4, n_perm=5)  # areas: not 1 mm²
    is8 = phen == "cd8_t"
    assert np.isclose(f["cells.total.density"], n / 2.5)
    assert np.isclose(f["cells.cd8_t.density"], is8.sum() / 2.5)
    assert np.isclose(f["cells.cd8_t.density_tumour"], (is8 & (comp == "tumour")).sum() / 0.4)
    assert np.isclose(f["cells.cd8_t.density_stroma"], (is8 & (comp == "stroma")).sum() / 2.1)
    assert np.isclose(f["cells.proliferating.density"], cells.proliferating.sum() / 2.5)
    assert np.isclose(f["cells.cd8_t/cd4_t.ratio"], is8.sum() / (phen == "cd4_t").sum())
    d = np.hypot(*(xy[is8][:, None] - xy[phen == "tumour"][None]).transpose(2, 0, 1)).min(1)
    assert np.isclose(f["cells.cd8_t.tumour_nn_median_um"], np.median(d))
    assert np.isclose(f["cells.cd8_t.tumour_within_20um"], np.mean(d <= 20))
    assert np.isnan(f["cells.b_cell.tumour_nn_median_um"])  # no B cells
    assert "cells.cd8_t~tumour.coloc_z" in f and "cells.tumour~cd8_t.coloc_z" not in f
    assert all(k.startswith("cells.") for k in f)


def test_every_cell_feature_is_known_to_the_statistics(rng):
    from virtime.stats.validation import is_known_feature

    cells = pd.DataFrame({"x_um": rng.random(50) * 100, "y_um": rng.random(50) * 100,
                          "phenotype": rng.choice(["tumour", "cd8_t"], 50),
                          "compartment": "tumour", "proliferating": False, "pdl1_tumour": False})
    names = list(cell_features(cells, 1.0, 0.5, n_perm=3))
    assert names and all(is_known_feature(n) for n in names)
    assert not is_known_feature("cells.cd8_t.unknown_metric")

