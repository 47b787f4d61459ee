"""Plain-numpy references of the feature definitions, written independently of the kernels."""

from __future__ import annotations

import itertools
import math

import numpy as np


def ref_partials(prob, tissue, idx, thr_native, y0, x0, bin_px):
    """Per-channel sums, co-occurrence and global-grid bins of one tile, in native units."""
    q = prob[idx].astype(np.float64)
    t = tissue.astype(bool)
    pos = (q > thr_native) & t
    qt = q * t
    sums = np.stack([
        pos.sum((1, 2)),
        qt.sum((1, 2)),
        (q * pos).sum((1, 2)),
        (qt * q).sum((1, 2)),
        (q * q * pos).sum((1, 2)),
        (np.abs(np.diff(q, axis=2)) * (t[:, 1:] & t[:, :-1])).sum((1, 2))
        + (np.abs(np.diff(q, axis=1)) * (t[1:] & t[:-1])).sum((1, 2)),
    ])
    P = pos.reshape(len(idx), -1).astype(np.float64)
    cooc = np.triu(P @ P.T)
    h, w = t.shape
    gy = (np.arange(h) + y0) // bin_px
    gx = (np.arange(w) + x0) // bin_px
    gy -= gy[0] if h else 0
    gx -= gx[0] if w else 0
    K = len(idx)
    bins = np.zeros((gy[-1] + 1 if h else 0, gx[-1] + 1 if w else 0, K + 1))
    Y, X = np.meshgrid(gy, gx, indexing="ij")
    for k in range(K):
        np.add.at(bins[..., k], (Y[pos[k]], X[pos[k]]), 1)
    np.add.at(bins[..., K], (Y[t], X[t]), 1)
    return int(t.sum()), sums, cooc, bins


def ref_features(prob, tissue, names, analyse, threshold, bin_px, pairs=None):
    """Whole-canvas features by the formulas of docs/features.md (probability units); pair features among
    ``pairs`` (default: every analysed channel)."""
    scale = 255.0 if prob.dtype == np.uint8 else 1.0
    t = tissue.astype(bool)
    n = int(t.sum())
    out = {}
    pos_masks = {}
    H, W = t.shape
    by = np.arange(H) // bin_px
    bx = np.arange(W) // bin_px
    nby, nbx = by[-1] + 1, bx[-1] + 1
    tis_bins = np.zeros((nby, nbx))
    np.add.at(tis_bins, np.meshgrid(by, bx, indexing="ij"), t)
    n_tbins = int((tis_bins > 0).sum())
    for name in analyse:
        p = prob[names.index(name)].astype(np.float64) / scale
        pos = (p > threshold) & t
        pos_masks[name] = pos
        neg = t & ~pos
        out[f"{name}.density"] = pos.sum() / n
        out[f"{name}.mean"] = p[t].mean()
        cb = np.zeros((nby, nbx))
        np.add.at(cb, np.meshgrid(by, bx, indexing="ij"), pos)
        if pos.sum() == 0 or n_tbins <= 1:
            out[f"{name}.entropy"] = 0.0
        else:
            qv = cb[cb > 0] / cb.sum()
            out[f"{name}.entropy"] = float(-(qv * np.log(qv)).sum() / math.log(n_tbins))
        if pos.sum() == 0 or neg.sum() == 0:
            out[f"{name}.snr"] = math.nan
        else:
            sd = p[neg].std()
            rms = math.sqrt(np.mean(p[neg] ** 2))
            tiny = 0.0 if scale == 255.0 else 1e-5 * rms
            out[f"{name}.snr"] = (p[pos].mean() - p[neg].mean()) / sd if sd > tiny else math.nan
        dx = np.abs(p[:, 1:] - p[:, :-1])[t[:, 1:] & t[:, :-1]].sum()
        dy = np.abs(p[1:] - p[:-1])[t[1:] & t[:-1]].sum()
        out[f"{name}.sharpness"] = (dx + dy) / n
    for a, b in itertools.combinations(analyse if pairs is None else pairs, 2):
        out[f"{a}|{b}.or_density"] = (pos_masks[a] | pos_masks[b]).sum() / n
        out[f"{a}&{b}.and_density"] = (pos_masks[a] & pos_masks[b]).sum() / n
    return out


def assert_features_close(got, ref, rtol=1e-6, atol=1e-12):
    for key, want in ref.items():
        have = got[key]
        if isinstance(want, float) and math.isnan(want):
            assert isinstance(have, float) and math.isnan(have), (key, have)
        else:
            assert math.isclose(have, want, rel_tol=rtol, abs_tol=atol), (key, have, want)
