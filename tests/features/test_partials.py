"""Slide features: accumulator vs the numpy reference; tile-wise == whole canvas; edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from virtime.channels import CHANNEL_NAMES, PROTEIN_CHANNELS
from virtime.errors import InputDataError, InvalidArgumentError, InvalidMppError
from virtime.features import SlideFeatureAccumulator

NAMES = ("DAPI", "TRITC", "CD3", "CD8", "CK")
ANALYSE = NAMES  # TRITC (background) too: a negative control of the statistics
PAIRS = ("DAPI", "CD3", "CD8", "CK")  # no pair features with a background channel


def _acc(**kw):
    kw.setdefault("mpp", 0.5)
    kw.setdefault("bin_um", 8.0)  # 16 px bins
    return SlideFeatureAccumulator(channels=NAMES, **kw)


def _random_tiling(rng, H, W):
    """Non-overlapping tiles of irregular sizes covering the canvas."""
    ys = np.unique(np.r_[0, rng.integers(1, H, 4), H])
    xs = np.unique(np.r_[0, rng.integers(1, W, 4), W])
    return [(ys[i], ys[i + 1], xs[j], xs[j + 1])
            for i in range(len(ys) - 1) for j in range(len(xs) - 1)]


def test_default_channels_are_the_23_and_pairs_the_21_proteins():
    acc = SlideFeatureAccumulator(mpp=0.5)
    assert acc.analyse == CHANNEL_NAMES and acc.pairs == PROTEIN_CHANNELS
    assert len(acc.analyse) == 23 and len(acc.pairs) == 21
    with pytest.raises(InvalidArgumentError, match="pair channels"):
        SlideFeatureAccumulator(mpp=0.5, analyse=("CD3", "CD8"), pairs=("CD3", "CK"))
    with pytest.raises(InvalidMppError):
        SlideFeatureAccumulator(mpp=float("nan"))
    with pytest.raises(InvalidArgumentError):
        SlideFeatureAccumulator(mpp=0.5, threshold=1.5)


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
@pytest.mark.parametrize("shape", [(61, 77), (128, 96)])
def test_whole_canvas_matches_reference(rng, ref, blobs, dtype, shape):
    H, W = shape
    prob = blobs(len(NAMES), H, W, dtype)
    tissue = blobs(1, H, W, np.float32)[0] > 0.35
    acc = _acc()
    acc.add_tile(prob, tissue, 0, 0)
    got = acc.result()
    want = ref.ref_features(prob, tissue, NAMES, ANALYSE, 0.5, acc.bin_px, pairs=PAIRS)
    assert len([k for k in got if k.endswith(".or_density")]) == 6
    ref.assert_features_close(got, want)
    assert "TRITC.density" in got and not any("TRITC|" in k or "|TRITC" in k for k in got)
    pair_keys = {k for k in got if k.endswith(("or_density", "and_density"))}
    assert pair_keys == {k for k in want if k.endswith(("or_density", "and_density"))}


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_tilewise_equals_whole_canvas(rng, blobs, dtype):
    H, W = 150, 131
    prob = blobs(len(NAMES), H, W, dtype)
    tissue = rng.random((H, W)) > 0.2
    whole = _acc()
    whole.add_tile(prob, tissue, 0, 0)
    want = whole.result()
    tiles = _random_tiling(rng, H, W)
    rng.shuffle(tiles)
    tiled = _acc()
    for y0, y1, x0, x1 in tiles:
        tiled.add_tile(prob[:, y0:y1, x0:x1], tissue[y0:y1, x0:x1], y0, x0)
    got = tiled.result()
    assert len(tiled._ledger) > 0  # canvas-border edges stay; inner ones were paired
    for key, value in want.items():
        if isinstance(value, str):
            assert got[key] == value
        elif math.isnan(value):
            assert math.isnan(got[key]), key
        elif dtype == np.uint8:
            assert got[key] == value, key  # integer partial sums: exact
        else:
            assert math.isclose(got[key], value, rel_tol=1e-9, abs_tol=1e-15), key


def test_merge_of_parallel_partials(rng, blobs):
    H, W = 96, 112
    prob = blobs(len(NAMES), H, W, np.uint8)
    tissue = rng.random((H, W)) > 0.1
    whole = _acc()
    whole.add_tile(prob, tissue, 0, 0)
    tiles = _random_tiling(rng, H, W)
    workers = [_acc() for _ in range(3)]
    for i, (y0, y1, x0, x1) in enumerate(tiles):
        workers[i % 3].add_tile(prob[:, y0:y1, x0:x1], tissue[y0:y1, x0:x1], y0, x0)
    merged = workers[2].merge(workers[0]).merge(workers[1])
    assert merged.result() == whole.result()
    with pytest.raises(InvalidArgumentError):
        merged.merge(_acc(threshold=0.3))


@pytest.mark.filterwarnings("ignore:features. no tissue:RuntimeWarning")
def test_no_tissue_gives_nan_and_warns(rng, blobs):
    prob = blobs(len(NAMES), 20, 20)
    acc = _acc()
    acc.add_tile(prob, np.zeros((20, 20), bool), 0, 0)
    with pytest.warns(RuntimeWarning, match="no tissue"):
        res = acc.result()
    assert all(math.isnan(v) for k, v in res.items()
               if isinstance(v, float) and k not in ("tissue.pixels", "tissue.area_mm2"))
    assert res["immune.phenotype"] == "undetermined"
    with pytest.warns(RuntimeWarning):
        assert math.isnan(_acc().result()["CD8.density"])  # nothing added at all


def test_never_positive_channel(rng, ref):
    prob = np.zeros((len(NAMES), 40, 40), np.uint8)
    prob[0] = rng.integers(0, 256, (40, 40))
    prob[3] = 127  # CD8 just below the threshold everywhere
    acc = _acc()
    acc.add_tile(prob, np.ones((40, 40), bool), 0, 0)
    res = acc.result()
    assert res["CD8.density"] == 0.0 and res["CD8.entropy"] == 0.0
    assert math.isnan(res["CD8.snr"]) and res["CD8.sharpness"] == 0.0
    ref.assert_features_close(res, ref.ref_features(prob, np.ones((40, 40), bool), NAMES,
                                                    ANALYSE, 0.5, acc.bin_px, PAIRS))


def test_all_positive_and_constant(ref):
    prob = np.full((len(NAMES), 33, 35), 0.9, np.float32)
    tissue = np.ones((33, 35), bool)
    acc = _acc()
    acc.add_tile(prob, tissue, 0, 0)
    res = acc.result()
    assert res["CK.density"] == 1.0 and math.isnan(res["CK.snr"])
    assert res["CD3|CD8.or_density"] == 1.0 and res["CD3&CD8.and_density"] == 1.0
    # positives spread evenly over 3 x 3 bins, tissue edge bins are partial: entropy < 1
    ref.assert_features_close(res, ref.ref_features(prob, tissue, NAMES, ANALYSE, 0.5,
                                                    acc.bin_px, PAIRS))


def test_entropy_extremes():
    H = W = 64  # 4 x 4 bins of 16 px
    prob = np.zeros((len(NAMES), H, W), np.uint8)
    prob[2, :16, :16] = 255  # CD3 in one bin only
    prob[3] = 255  # CD8 everywhere, evenly
    acc = _acc()
    acc.add_tile(prob, np.ones((H, W), bool), 0, 0)
    res = acc.result()
    assert res["CD3.entropy"] == 0.0
    assert math.isclose(res["CD8.entropy"], 1.0)


def test_nan_input_is_an_error(rng):
    prob = rng.random((len(NAMES), 10, 10), dtype=np.float32)
    prob[3, 2, 2] = np.nan
    with pytest.raises(InputDataError, match="NaN"):
        _acc().add_tile(prob, np.ones((10, 10), bool), 0, 0)


def test_bad_shapes_and_dtypes(rng):
    acc = _acc()
    with pytest.raises(InputDataError):
        acc.add_tile(np.zeros((3, 4, 4), np.uint8), np.ones((4, 4), bool), 0, 0)
    with pytest.raises(InputDataError):
        acc.add_tile(np.zeros((5, 4, 4), np.uint8), np.ones((4, 5), bool), 0, 0)
    with pytest.raises(InputDataError):
        acc.add_tile(np.zeros((5, 4, 4), np.int32), np.ones((4, 4), bool), 0, 0)
    acc.add_tile(np.zeros((5, 4, 4), np.uint8), np.ones((4, 4), bool), 0, 0)
    with pytest.raises(InputDataError, match="mix"):
        acc.add_tile(np.zeros((5, 4, 4), np.float32), np.ones((4, 4), bool), 0, 4)
