"""On simulated ground-truth mIF: nucleus F1 >= 0.9 at 4 µm and phenotype counts within 10 %."""

from __future__ import annotations

import numpy as np
import pytest

from virtime.cells import cells_from_map
from virtime.cells.evaluate import match_points, score_cells


def test_match_points_is_one_to_one_and_closest_first():
    a = np.array([[0.0, 0.0], [1.0, 0.0]])
    b = np.array([[0.9, 0.0]])
    assert match_points(a, b, 2.0).tolist() == [[1, 0]]
    assert match_points(a, np.zeros((0, 2)), 2.0).shape == (0, 2)


@pytest.mark.slow
@pytest.mark.parametrize("mpp, seeds", [(0.5, (11, 12)), (0.25, (13,))])
def test_f1_and_counts_on_ground_truth(mpp, seeds):
    import pandas as pd

    from virtime.simulate.tissue import render_tissue

    size = int(300 / mpp)
    summaries, scores = [], []
    for seed in seeds:
        _, targets, truth = render_tissue((size, size), mpp=mpp, rng=np.random.default_rng(seed))
        cells = cells_from_map(targets.astype(np.float32), mpp, tile_size=int(128 / mpp)).frame
        s = score_cells(cells, truth, mpp)
        scores.append(s)
        summaries.append(s.summary[["truth", "found"]])
    matched = sum(s.matched for s in scores)
    p = matched / sum(s.detected for s in scores)
    r = matched / sum(s.true for s in scores)
    assert 2 * p * r / (p + r) >= 0.9
    total = pd.concat(summaries).groupby(level=0).sum()
    named = total.drop(index="other")  # "other" pools every unnamed type (fibroblasts, vessels)
    err = (named.found / named.truth - 1).abs()
    assert (err[named.truth >= 15] <= 0.10).all(), total
