"""The committed demo checkpoint: loads offline and beats the mean-prevalence baseline on
simulated tiles it never saw (a different seed from its training data)."""

from __future__ import annotations

import json

import numpy as np

from virtime.models import DEMO_WEIGHTS, load_demo
from virtime.models.card import sha256_file


def test_demo_loads_with_card():
    model = load_demo()
    card = model.card
    assert card.architecture == "gigatime" and card.input_mpp == 0.5 and card.window == 256
    stored = json.loads(DEMO_WEIGHTS.with_suffix(".json").read_text())
    assert stored["sha256"] == sha256_file(DEMO_WEIGHTS)  # the card names these exact weights
    assert DEMO_WEIGHTS.stat().st_size < 5 * 2**20
    assert set(card.confidence_tiers) == set(card.channels)


def test_demo_beats_baseline_on_held_out_tiles(tmp_path):
    from virtime.evaluation.evaluate import evaluate
    from virtime.training.data import write_simulated_pairs

    write_simulated_pairs(tmp_path, 6, size=256, mpp=0.5, tiles_per_slide=2, seed=4242,
                          show_progress=False)
    result = evaluate(load_demo(), tmp_path, split="all", show_progress=False)
    s = result.summary.set_index("channel").drop(["TRITC", "Cy5"])
    # The committed checkpoint scored 0.45 on these tiles (0.448 on its validation slides).
    assert result.mean_pearson > np.nanmean(s.baseline_pearson) + 0.3
    for channel in ("DAPI", "CK", "CD138", "CD3"):  # morphology-rich channels are learnt
        assert s.loc[channel, "pearson"] > 0.5
    assert s.loc["CD8", "pearson"] > 0.25  # the demo's survival and MSI-high channel
    # the specificity matrix's diagonal is the per-channel protocol
    spec = result.specificity
    full = result.summary.set_index("channel")
    np.testing.assert_allclose(np.diag(spec.pearson.to_numpy()), full["pearson"], rtol=1e-9)
    np.testing.assert_allclose(np.diag(spec.dice.to_numpy()), full["dice"], rtol=1e-9)
