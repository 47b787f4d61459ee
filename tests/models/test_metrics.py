"""The GigaTIME evaluation protocol against a numpy computation written here."""

from __future__ import annotations

import numpy as np
import pytest

from virtime.evaluation.metrics import EvalAccumulator, tile_pearson


def _down8(x):
    """Bilinear 1/8 without antialias, half-pixel centres: the mean of pixels 8i+3 and 8i+4."""
    x = 0.5 * (x[..., 3::8, :] + x[..., 4::8, :])
    return 0.5 * (x[..., :, 3::8] + x[..., :, 4::8])


def _up_axis(x, n_out, axis):
    n_in = x.shape[axis]
    src = np.maximum((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0)
    i0 = np.floor(src).astype(int)
    i1 = np.minimum(i0 + 1, n_in - 1)
    lam = src - i0
    shape = [1] * x.ndim
    shape[axis] = n_out
    lam = lam.reshape(shape)
    return np.take(x, i0, axis) * (1 - lam) + np.take(x, i1, axis) * lam


def _reference(probs, targets):
    n, c, h, w = targets.shape
    soft = _up_axis(_up_axis(_down8(targets.astype(float)), h, 2), w, 3)
    pred = (probs > 0.5).astype(float)
    box = lambda a: a.reshape(n, c, h // 8, 8, w // 8, 8).sum((3, 5))  # noqa: E731
    pb, tb = box(pred), box(soft)
    r = np.full((n, c), np.nan)
    for i in range(n):
        for k in range(c):
            if np.ptp(tb[i, k]) == 0:
                continue
            r[i, k] = 0.0 if np.ptp(pb[i, k]) == 0 else np.corrcoef(pb[i, k].ravel(),
                                                                      tb[i, k].ravel())[0, 1]
    b, t = pred.astype(bool), targets.astype(bool)
    tp, fp, fn = (b & t).sum((0, 2, 3)), (b & ~t).sum((0, 2, 3)), (~b & t).sum((0, 2, 3))
    return np.nanmean(np.where(np.isnan(r), np.nan, r), 0), 2 * tp / (2 * tp + fp + fn), tp / (
        tp + fp + fn)


def test_protocol_matches_numpy(rng):
    n, c, h, w = 3, 4, 64, 48
    targets = np.zeros((n, c, h, w), np.uint8)
    yy, xx = np.mgrid[:h, :w]
    for i in range(n):
        for k in range(c):  # hand-made blobs: a few discs per tile and channel
            for _ in range(3):
                cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(3, 9)
                targets[i, k] |= ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.uint8)
    probs = np.clip(targets * 0.7 + rng.random(targets.shape) * 0.45, 0, 1)
    acc = EvalAccumulator(channels=tuple("abcd"))
    acc.update(probs[:2], targets[:2])
    acc.update(probs[2:], targets[2:])
    s = acc.summary()
    ref_r, ref_dice, ref_iou = _reference(probs, targets)
    np.testing.assert_allclose(s.pearson, ref_r, atol=1e-9)
    np.testing.assert_allclose(s.dice, ref_dice, atol=1e-12)
    np.testing.assert_allclose(s.iou, ref_iou, atol=1e-12)
    np.testing.assert_allclose(s.prevalence, targets.mean((0, 2, 3)))


def test_undefined_pearson_conventions():
    t = np.zeros((1, 1, 4, 4))
    t[0, 0, 0, 0] = 5
    p_const = np.ones_like(t)
    assert tile_pearson(p_const, t)[0, 0] == 0.0  # constant prediction: no information
    assert np.isnan(tile_pearson(t, np.zeros_like(t))[0, 0])  # constant target: skipped
    assert tile_pearson(t, t)[0, 0] == pytest.approx(1.0)


def test_empty_channel_skipped_in_mean():
    acc = EvalAccumulator(channels=("x",))
    acc.update(np.zeros((2, 1, 16, 16)), np.zeros((2, 1, 16, 16)))
    s = acc.summary()
    assert s.n_tiles[0] == 0 and np.isnan(s.pearson[0]) and np.isnan(s.dice[0])
