"""The background channels (TRITC, Cy5) get a slide's per-channel features, so the statistics can
test them as negative controls; the pair features stay among the 21 protein channels."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from virtime.channels import BACKGROUND_CHANNELS, CHANNEL_NAMES, PROTEIN_CHANNELS
from virtime.features import METRICS, compute_slide_features

MPP = 0.5
H, W = 96, 80
TISSUE = (slice(8, 88), slice(4, 76))  # 80 x 72 = 5760 tissue pixels
N_TISSUE = 80 * 72


def _canvas(rng):
    """23 noisy protein maps; TRITC: a 24 x 20 positive rectangle (200) inside tissue on a
    40/50 checkerboard; Cy5: a horizontal ramp 3x (positive from column 43 on)."""
    prob = rng.integers(0, 256, (23, H, W)).astype(np.uint8)
    y, x = np.mgrid[:H, :W]
    tritc = (40 + 10 * ((y + x) % 2)).astype(np.uint8)
    tritc[16:40, 10:30] = 200
    prob[CHANNEL_NAMES.index("TRITC")] = tritc
    prob[CHANNEL_NAMES.index("Cy5")] = (3 * x).astype(np.uint8)
    tissue = np.zeros((H, W), bool)
    tissue[TISSUE] = True
    return prob, tissue


@pytest.fixture
def planted(rng):
    prob, tissue = _canvas(rng)
    feats = compute_slide_features(prob, tissue, MPP, bin_um=8.0, strip_rows=20)
    return prob, tissue, feats


def test_background_features_equal_the_planted_values(planted):
    _, _, f = planted
    assert f["TRITC.density"] == pytest.approx(24 * 20 / N_TISSUE, rel=1e-12)
    off = N_TISSUE - 480  # TRITC negatives: half 40, half 50 (72 columns per row: even split)
    assert f["TRITC.mean"] == pytest.approx((480 * 200 + off / 2 * 90) / 255 / N_TISSUE)
    assert f["TRITC.snr"] == pytest.approx((200 - 45) / 5)  # negatives: mean 45, sd 5 (x255)
    assert f["Cy5.density"] == pytest.approx((76 - 43) / 72, rel=1e-12)
    # Cy5 changes by 3/255 between horizontal neighbours, not vertically: 80 rows x 71 pairs
    assert f["Cy5.sharpness"] == pytest.approx(80 * 71 * 3 / 255 / N_TISSUE, rel=1e-12)


def test_background_features_equal_the_numpy_reference(planted, ref):
    prob, tissue, f = planted
    want = ref.ref_features(prob, tissue, CHANNEL_NAMES, CHANNEL_NAMES, 0.5, 16,
                            pairs=PROTEIN_CHANNELS)
    ref.assert_features_close(f, want)
    per_channel = {k for k in f if k.rpartition(".")[2] in METRICS}
    assert per_channel == {f"{c}.{m}" for c in CHANNEL_NAMES for m in METRICS}  # 23 x 5


def test_pair_features_stay_among_the_proteins(planted):
    _, _, f = planted
    pairs = {k for k in f if k.endswith((".or_density", ".and_density"))}
    want = {f"{a}{op}{b}.{m}" for a, b in itertools.combinations(PROTEIN_CHANNELS, 2)
            for op, m in (("|", "or_density"), ("&", "and_density"))}
    assert pairs == want and len(pairs) == 420
    assert not any(bg in k.split(".")[0] for k in pairs for bg in BACKGROUND_CHANNELS)
