"""Dilated attention against dense attention and a loop-by-loop reference of LongNet's rule."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from virtime.embed import SlideEncoder, SlideEncoderConfig, dilated_attention


def dense(q, k, v):
    s = np.einsum("lhd,mhd->hlm", q, k) / math.sqrt(q.shape[-1])
    p = np.exp(s - s.max(-1, keepdims=True))
    return np.einsum("hlm,mhd->lhd", p / p.sum(-1, keepdims=True), v)


def reference(q, k, v, segments, ratios):
    """Per branch, per segment, per head: attend among offsets g, g+r, ... (zero-padded keys
    visible, as in the official code); merge branches by log-sum-exp weights."""
    L, H, D = q.shape
    outs, lses = [], []
    for w, r in zip(segments, ratios):
        s = min(w, L)
        n = -(-L // s)
        hp = -(-H // r)
        out = np.zeros((L, H, D))
        lse = np.full((L, H), -1e8)
        for seg in range(n):
            for h in range(H):
                g = h // hp
                s2 = -(-s // r) * r
                pos = seg * s + np.arange(g, s2, r)  # padded positions included
                ok = (pos < L) & (pos < seg * s + s)
                qq, kk, vv = (np.zeros((len(pos), D)) for _ in range(3))
                for rows, x in ((qq, q), (kk, k), (vv, v)):
                    rows[ok] = x[pos[ok], h]
                sc = qq @ kk.T / math.sqrt(D)
                m = sc.max(1, keepdims=True)
                e = np.exp(sc - m)
                o = (e @ vv) / e.sum(1, keepdims=True)
                ls = (m + np.log(e.sum(1, keepdims=True)))[:, 0]
                out[pos[ok], h] = o[ok]
                lse[pos[ok], h] = ls[ok]
        outs.append(out)
        lses.append(lse)
    lses = np.stack(lses)
    w = np.exp(lses - lses.max(0))
    w = w / w.sum(0)
    return sum(o * wi[..., None] for o, wi in zip(outs, w))


@pytest.fixture
def qkv(rng):
    return [rng.standard_normal((1, 37, 4, 8)) for _ in range(3)]


def t(x):
    return torch.from_numpy(np.asarray(x, dtype=np.float32))


def test_one_segment_covering_sequence_is_dense_attention(qkv):
    q, k, v = qkv
    got = dilated_attention(t(q), t(k), t(v), (64,), (1,)).numpy()[0]
    np.testing.assert_allclose(got, dense(q[0], k[0], v[0]), atol=1e-5)
    # a segment exactly the sequence length too
    got = dilated_attention(t(q), t(k), t(v), (37,), (1,)).numpy()[0]
    np.testing.assert_allclose(got, dense(q[0], k[0], v[0]), atol=1e-5)


@pytest.mark.parametrize(
    ("segments", "ratios"),
    [((8, 16, 64), (1, 2, 4)), ((5,), (1,)), ((16,), (2,)), ((10, 20), (1, 3))],
)
def test_matches_loop_reference(qkv, segments, ratios):
    q, k, v = qkv
    got = dilated_attention(t(q), t(k), t(v), segments, ratios).numpy()[0]
    np.testing.assert_allclose(got, reference(q[0], k[0], v[0], segments, ratios), atol=1e-5)


def test_batch_items_are_independent(rng):
    q, k, v = (t(rng.standard_normal((3, 20, 4, 8))) for _ in range(3))
    both = dilated_attention(q, k, v, (8, 16), (1, 2))
    one = dilated_attention(q[1:2], k[1:2], v[1:2], (8, 16), (1, 2))
    np.testing.assert_allclose(both[1:2].numpy(), one.numpy(), atol=1e-6)


def test_slide_encoder_all_layers_and_shapes(rng):
    torch.manual_seed(0)
    cfg = SlideEncoderConfig(in_chans=24, embed_dim=16, depth=2, num_heads=4, ffn_dim=32,
                             segment_lengths=(8, 32), dilated_ratios=(1, 2))
    model = SlideEncoder(cfg).eval()
    with torch.no_grad():  # a non-trivial output LayerNorm, so skipping it shows
        model.encoder.layer_norm.weight.copy_(torch.linspace(0.2, 3.0, 16))
        model.encoder.layer_norm.bias.copy_(torch.linspace(-1.0, 1.0, 16) ** 3)
    x = t(rng.standard_normal((40, 24)))
    coords = t(rng.integers(0, 30, size=(40, 2)) * 256)
    with torch.no_grad():
        final = model(x, coords)
        layers = model(x, coords, all_layers=True)
        # the last per-layer entry is norm(state) without the encoder's output LayerNorm
        state = model.patch_embed.proj(x[None])
    assert final.shape == (1, 16) and len(layers) == 3 and layers[0].shape == (1, 16)
    assert not torch.allclose(final, layers[-1], atol=1e-3)
    with torch.no_grad():
        model.encoder.layer_norm.weight.fill_(1.0)
        model.encoder.layer_norm.bias.fill_(0.0)
        np.testing.assert_allclose(model(x, coords).numpy(), layers[-1].numpy(), atol=1e-4)
    # permuting the tiles (with their coordinates) leaves the slide embedding unchanged only
    # when attention is dense: check with one dense branch
    dense_cfg = SlideEncoderConfig(in_chans=24, embed_dim=16, depth=2, num_heads=4, ffn_dim=32,
                                   segment_lengths=(4096,), dilated_ratios=(1,))
    dense_model = SlideEncoder(dense_cfg).eval()
    dense_model.load_state_dict(model.state_dict())
    perm = torch.from_numpy(rng.permutation(40))
    with torch.no_grad():
        a = dense_model(x, coords)
        b = dense_model(x[perm], coords[perm])
    np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5)
    assert state.shape == (1, 40, 16)
