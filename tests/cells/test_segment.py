"""Segmentation and measurement against scipy / numpy references."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from virtime.cells import CellConfig, cells_in_region
from virtime.cells._distance import edt, nearest_label
from virtime.cells.measure import NUCLEAR_CHANNELS, measure_cells
from virtime.cells.segment import expand_to_cells, segment_nuclei
from virtime.channels import CHANNEL_NAMES

from .conftest import blob_map


def test_edt_matches_scipy(rng):
    mask = ndimage.gaussian_filter(rng.random((120, 90)), 2) > 0.5
    np.testing.assert_allclose(edt(mask), ndimage.distance_transform_edt(mask), atol=1e-5)
    full = np.ones((7, 9), bool)  # no background: scipy and we both say "far"
    assert (edt(full) > 1e6).all()


def test_nearest_label_grows_to_the_nearest_nucleus(rng):
    labels, _ = ndimage.label(rng.random((80, 70)) > 0.99)
    grown = nearest_label(labels, 5.0)
    d, (iy, ix) = ndimage.distance_transform_edt(labels == 0, return_indices=True)
    ref = np.where(d <= 5.0, labels[iy, ix], 0)
    # Equal except at exact ties between two nuclei.
    tie = grown != ref
    assert tie.mean() < 0.01
    assert ((grown > 0) == (ref > 0)).all()


def test_touching_nuclei_are_split_and_a_lone_one_kept():
    probs = blob_map((60, 80), [(30, 20, 6), (30, 31, 6), (30, 62, 5)])
    lab = segment_nuclei(probs[0], 0.5, CellConfig(smooth_um=0))
    assert lab.max() == 3


def test_lineage_edges_split_cells_of_different_types():
    # A small CD3+ nucleus pressed into a large CK+ one: one blob by shape.
    probs = blob_map((60, 60), [(30, 24, 11), (30, 39, 5)], {"CK": [0], "CD3": [1]})
    probs[CHANNEL_NAMES.index("CK")][probs[CHANNEL_NAMES.index("CD3")] > 0] = 0  # owned pixels
    cfg = CellConfig(smooth_um=0)
    lineage = probs[[CHANNEL_NAMES.index("CK"), CHANNEL_NAMES.index("CD3")]]
    assert segment_nuclei(probs[0], 0.5, cfg, lineage).max() == 2


def test_measurements_match_numpy(rng):
    probs = rng.random((23, 50, 60)).astype(np.float32)
    probs[0] = blob_map((50, 60), [(15, 15, 5), (35, 40, 6)])[0]
    nuc = segment_nuclei(probs[0], 0.5, CellConfig(smooth_um=0))
    cells = expand_to_cells(nuc, 0.5)
    m = measure_cells(probs, nuc, cells)
    for k in range(1, nuc.max() + 1):
        ys, xs = np.nonzero(nuc == k)
        assert np.isclose(m["y"][k - 1], ys.mean()) and np.isclose(m["x"][k - 1], xs.mean())
        assert m["cell_px"][k - 1] == (cells == k).sum()
        for c, name in enumerate(CHANNEL_NAMES):
            mask = nuc == k if name in NUCLEAR_CHANNELS else cells == k
            assert np.isclose(m["mean"][k - 1, c], probs[c][mask].mean(), rtol=1e-5)
    # 2 µm expansion at 0.5 µm/px: the radius-5 nucleus becomes a radius-9 disk
    assert np.isclose(m["cell_px"][0], (np.hypot(*np.mgrid[-20:21, -20:21]) <= 9).sum(),
                      rtol=0.05)


def test_region_owns_by_centroid():
    probs = blob_map((40, 80), [(20, 15, 4), (20, 60, 4)])
    cells, _ = cells_in_region(probs, (100, 0), 0.5, CellConfig(smooth_um=0),
                               owns=lambda x, y: x < 140)
    assert len(cells["x"]) == 1 and np.isclose(cells["x"][0], 115)
