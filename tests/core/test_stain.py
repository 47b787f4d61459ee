"""Stain normalization (C++ core) against independent numpy implementations of the same
documented definitions, on H&E tiles rendered here by Beer-Lambert from planted stains."""

from __future__ import annotations

import pickle
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from scipy import ndimage

from virtime import _core, stain
from virtime.errors import InvalidArgumentError
from virtime.stain import StainStatus

LN256 = np.log(256.0)
REF_M = np.array([[0.5626, 0.2159], [0.7201, 0.8012], [0.4062, 0.5581]])
REF_MAXC = np.array([1.9705, 1.0308])
# A second, clearly different lab: bluer hematoxylin, more magenta eosin.
OTHER_M = np.array([[0.70, 0.10], [0.62, 0.86], [0.35, 0.50]])
OTHER_M /= np.linalg.norm(OTHER_M, axis=0)


# ----------------------------------------------------------------------------- test images
def render_he(rng, h, w, m=REF_M, h_scale=1.0, e_scale=1.0, background=0.3):
    """Beer-Lambert H&E: eosin stroma, hematoxylin nuclei, white glass; I = 256 e^-OD - 1."""
    e = ndimage.gaussian_filter(rng.normal(size=(h, w)), 4)
    e = 0.25 + 0.6 * (e - e.min()) / (np.ptp(e) + 1e-12)
    base = ndimage.gaussian_filter(rng.normal(size=(h, w)), 6)
    conc_h = 0.2 * (base - base.min()) / (np.ptp(base) + 1e-12)  # some stroma has ~no hematoxylin
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(max(1, h * w // 180)):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(2.5, 6)
        inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        conc_h[inside] = np.maximum(conc_h[inside], rng.uniform(0.8, 1.8))
    glass = ndimage.gaussian_filter(rng.normal(size=(h, w)), 8)
    glass = glass < np.quantile(glass, background) if background > 0 else np.zeros((h, w), bool)
    c = np.stack([conc_h * h_scale, e * e_scale])
    c[:, glass] = 0.0
    od = np.einsum("ck,kyx->yxc", m, c) + rng.normal(0, 0.01, size=(h, w, 3))
    return np.clip(np.floor(256 * np.exp(-od) - 1 + 0.5), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- numpy references
def np_od(img):
    return LN256 - np.log(img.astype(np.float64).reshape(-1, 3) + 1.0)


def np_from_od(od):
    return np.clip(np.floor(np.clip(256.0 * np.exp(-od) - 1.0, 0, 255) + 0.5), 0, 255)


def np_macenko_estimate(img, beta=0.15, alpha=1.0, pct=99.0):
    od = np_od(img)
    t = od[(od >= beta).all(axis=1)]
    _, vecs = np.linalg.eigh(np.cov(t.T))
    e1, e2 = vecs[:, 2], vecs[:, 1]
    e1 = e1 if e1.sum() >= 0 else -e1
    e2 = e2 if e2.sum() >= 0 else -e2
    phi = np.arctan2(t @ e2, t @ e1)
    lo, hi = np.percentile(phi, [alpha, 100 - alpha])
    v_lo = e1 * np.cos(lo) + e2 * np.sin(lo)
    v_hi = e1 * np.cos(hi) + e2 * np.sin(hi)
    cols = (v_lo, v_hi) if v_lo[0] >= v_hi[0] else (v_hi, v_lo)
    m = np.stack([c / np.linalg.norm(c) * (1 if c.sum() >= 0 else -1) for c in cols], axis=1)
    conc = np.linalg.lstsq(m, t.T, rcond=None)[0]
    return m, np.percentile(conc, pct, axis=1)


def np_macenko_apply(img, m_tile, maxc_tile, m_ref=REF_M, maxc_ref=REF_MAXC):
    conc = np.linalg.pinv(m_tile) @ np_od(img).T
    conc *= (maxc_ref / maxc_tile)[:, None]
    return np_from_od((m_ref @ conc).T).reshape(img.shape)


LMS = np.array([[0.3811, 0.5783, 0.0402], [0.1967, 0.7244, 0.0782], [0.0241, 0.1288, 0.8444]])
ROT = np.array([[1, 1, 1], [1, 1, -2], [1, -1, 0]]) / np.sqrt([3.0, 6.0, 2.0])[:, None]


def np_lab(img):
    rgb = (img.astype(np.float64).reshape(-1, 3) + 1.0) / 256.0
    return (np.log10(rgb @ LMS.T) @ ROT.T).reshape(img.shape)


def np_lab_to_rgb(lab):
    lms = 10.0 ** (lab.reshape(-1, 3) @ np.linalg.inv(ROT).T)
    rgb = 256.0 * (lms @ np.linalg.inv(LMS).T) - 1.0
    return np.floor(np.clip(rgb, 0, 255) + 0.5).reshape(lab.shape)


def np_reinhard_stats(img, beta=0.15):
    tissue = np.linalg.norm(np_od(img), axis=1) >= beta
    lab = np_lab(img).reshape(-1, 3)[tissue]
    return tissue.sum(), lab.mean(axis=0), lab.std(axis=0)


def assert_close_image(got, want, max_diff=1, frac=0.01):
    diff = np.abs(got.astype(np.int64) - want.astype(np.int64))
    assert diff.max() <= max_diff
    assert (diff > 0).mean() <= frac


# ----------------------------------------------------------------------------- Macenko
@pytest.mark.parametrize("m", [REF_M, OTHER_M])
def test_macenko_estimate_matches_numpy_and_recovers_planted_matrix(rng, m):
    img = render_he(rng, 128, 160, m=m)
    est = stain.MacenkoNormalizer().estimate(img)
    assert est.ok and est.note == ""
    want_m, want_c = np_macenko_estimate(img)
    np.testing.assert_allclose(est.stain_matrix, want_m, atol=1e-3)
    np.testing.assert_allclose(est.max_concentrations, want_c, rtol=1e-3)
    # The planted stain vectors come back, hematoxylin first (Macenko finds the extreme mixtures
    # present in the tile, so within a few degrees, not exactly).
    cos = est.stain_matrix.T @ m
    assert cos[0, 0] > 0.99 and cos[1, 1] > 0.99
    assert cos[0, 0] > cos[0, 1] and cos[1, 1] > cos[1, 0]


def test_macenko_transform_matches_numpy(rng):
    norm = stain.MacenkoNormalizer()
    for h_scale, e_scale in [(1.0, 1.0), (0.6, 1.4), (1.3, 0.7)]:
        img = render_he(rng, 96, 128, m=OTHER_M, h_scale=h_scale, e_scale=e_scale)
        out, outcome = norm.transform(img, return_outcome=True)
        assert outcome.status == StainStatus.NORMALIZED and outcome.note == ""
        m_tile, c_tile = np_macenko_estimate(img)
        assert_close_image(out, np_macenko_apply(img, m_tile, c_tile))
        # The plan is the documented pseudo-inverse and rescaling, and the CPU twin reproduces it.
        plan = norm.plan(img)
        np.testing.assert_allclose(plan.inv, np.linalg.pinv(m_tile), atol=2e-3)
        np.testing.assert_allclose(plan.scale, REF_MAXC / c_tile, rtol=2e-3)
        np.testing.assert_allclose(plan.ref, REF_M, atol=1e-6)
        np.testing.assert_array_equal(_core.macenko_apply(img, plan.inv, plan.scale, plan.ref), out)


def test_macenko_fit_then_transform_gives_the_fitted_stains(rng):
    target = render_he(rng, 128, 128, m=OTHER_M)
    norm = stain.MacenkoNormalizer().fit(target)
    want_m, want_c = np_macenko_estimate(target)
    np.testing.assert_allclose(norm.stain_matrix_, want_m, atol=1e-3)
    np.testing.assert_allclose(norm.max_concentrations_, want_c, rtol=1e-3)
    tile = render_he(rng, 128, 128, m=REF_M, h_scale=0.7, e_scale=1.3)
    out = norm.transform(tile)
    got = stain.MacenkoNormalizer().estimate(out)
    assert got.ok
    assert np.abs(got.stain_matrix - norm.stain_matrix_).max() < 0.03
    np.testing.assert_allclose(got.max_concentrations, norm.max_concentrations_, rtol=0.1)
    # Far from the tile's own stains before the transform.
    assert np.abs(stain.MacenkoNormalizer().estimate(tile).stain_matrix - want_m).max() > 0.1


def test_macenko_default_reference_and_set_reference(rng):
    norm = stain.get_normalizer("macenko")
    np.testing.assert_array_equal(norm.stain_matrix_, stain.DEFAULT_STAIN_MATRIX)
    np.testing.assert_array_equal(norm.max_concentrations_, stain.DEFAULT_MAX_CONCENTRATIONS)
    norm.set_reference(OTHER_M, [1.5, 0.8])
    np.testing.assert_allclose(norm.stain_matrix_, OTHER_M)
    img = render_he(rng, 64, 64)
    m_tile, c_tile = np_macenko_estimate(img)
    want = np_macenko_apply(img, m_tile, c_tile, OTHER_M, np.array([1.5, 0.8]))
    assert_close_image(norm.transform(img), want)
    for bad in ([[1, 1], [1, 1], [1, 1]], [[np.nan, 0.2], [0.7, 0.8], [0.4, 0.5]]):
        with pytest.raises(InvalidArgumentError):
            norm.set_reference(bad, [1.0, 1.0])
    with pytest.raises(InvalidArgumentError):
        norm.set_reference(REF_M, [1.0, 0.0])
    with pytest.raises(InvalidArgumentError):
        norm.set_reference(REF_M[:2], [1.0, 1.0])


def test_macenko_fallback_matrix_with_few_tissue_pixels(rng):
    img = np.full((48, 48, 3), 250, np.uint8)
    patch = render_he(rng, 12, 12, background=0.0)  # 144 tissue-ish pixels: >= 50, < 500
    img[10:22, 20:32] = patch
    norm = stain.MacenkoNormalizer()
    out, outcome = norm.transform(img, return_outcome=True)
    assert outcome.status == StainStatus.FALLBACK_MATRIX
    assert "reference stain matrix" in outcome.note
    od = np_od(img)
    t = od[(od >= 0.15).all(axis=1)]
    assert 50 <= len(t) < 500
    maxc = np.percentile(np.linalg.pinv(REF_M) @ t.T, 99, axis=1)
    assert_close_image(out, np_macenko_apply(img, REF_M, maxc))


@pytest.mark.parametrize(
    "tile",
    [
        pytest.param(np.full((64, 64, 3), 255, np.uint8), id="white"),
        pytest.param(np.zeros((3, 3, 3), np.uint8), id="tiny"),
        pytest.param(np.zeros((64, 64, 3), np.uint8), id="black"),
        pytest.param(np.tile(np.uint8([150, 90, 170]), (64, 64, 1)), id="constant"),
        pytest.param(np.zeros((0, 5, 3), np.uint8), id="empty"),
    ],
)
@pytest.mark.parametrize("name", ["macenko", "reinhard"])
def test_degenerate_tiles_pass_through(tile, name):
    norm = stain.get_normalizer(name)
    out, outcome = norm.transform(tile, return_outcome=True)
    assert outcome.status == StainStatus.PASSED_THROUGH and outcome.note
    np.testing.assert_array_equal(out, tile)


def test_noisy_background_and_single_stain_tiles_are_safe(rng):
    norm = stain.MacenkoNormalizer()
    glass = np.clip(rng.normal(240, 6, size=(64, 64, 3)), 0, 255).astype(np.uint8)
    out, outcome = norm.transform(glass, return_outcome=True)
    assert outcome.status != StainStatus.NORMALIZED
    # Hematoxylin only: the plane is degenerate or one stain is absent; never NaN, never a crash.
    c = np.stack([rng.uniform(0.5, 1.5, (64, 64)), np.zeros((64, 64))])
    od = np.einsum("ck,kyx->yxc", REF_M, c)
    only_h = np.clip(np.floor(256 * np.exp(-od) - 0.5), 0, 255).astype(np.uint8)
    est = norm.estimate(only_h)
    assert np.isfinite(est.stain_matrix).all() and np.isfinite(est.max_concentrations).all()
    out, outcome = norm.transform(only_h, return_outcome=True)
    assert out.shape == only_h.shape and isinstance(outcome.status, StainStatus)
    plan = norm.plan(only_h)
    assert all(np.isfinite(a).all() for a in (plan.inv, plan.scale, plan.ref))


def test_fit_rejects_images_without_tissue():
    for name in ("macenko", "reinhard"):
        with pytest.raises(InvalidArgumentError, match="tissue pixels"):
            stain.get_normalizer(name).fit(np.full((64, 64, 3), 255, np.uint8))


# ----------------------------------------------------------------------------- Reinhard
def test_lab_conversion_matches_numpy_and_round_trips(rng):
    img = rng.integers(0, 256, size=(32, 48, 3), dtype=np.uint8)
    img[0, :8] = [[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255],
                  [1, 2, 3], [254, 1, 128], [7, 7, 7]]
    lab = _core.rgb_to_lab(img)
    assert lab.dtype == np.float32
    np.testing.assert_allclose(lab, np_lab(img), atol=1e-5)
    np.testing.assert_array_equal(_core.lab_to_rgb(lab), img)
    shifted = np_lab(img) + rng.normal(0, 0.05, size=img.shape)
    np.testing.assert_array_equal(
        _core.lab_to_rgb(shifted.astype(np.float32)), np_lab_to_rgb(shifted.astype(np.float32))
    )


def test_reinhard_transform_matches_numpy(rng):
    norm = stain.ReinhardNormalizer()
    for m, hs, es in [(OTHER_M, 1.0, 1.0), (REF_M, 0.6, 1.5)]:
        img = render_he(rng, 96, 96, m=m, h_scale=hs, e_scale=es)
        out, outcome = norm.transform(img, return_outcome=True)
        assert outcome.status == StainStatus.NORMALIZED
        _, mean, std = np_reinhard_stats(img)
        lab = (np_lab(img) - mean) / std * norm.lab_std_ + norm.lab_mean_
        assert_close_image(out, np_lab_to_rgb(lab))
        # Over the same (input) tissue pixels the result has the reference's statistics, up to
        # rounding and clipping.
        tissue = np.linalg.norm(np_od(img), axis=1) >= 0.15
        got = np_lab(out).reshape(-1, 3)[tissue]
        got_mean, got_std = got.mean(axis=0), got.std(axis=0)
        np.testing.assert_allclose(got_mean, norm.lab_mean_, atol=0.01)
        np.testing.assert_allclose(got_std, norm.lab_std_, rtol=0.1, atol=2e-3)


def test_reinhard_default_reference_is_the_synthetic_he_image():
    ref = stain.reference_he_image()
    assert ref.shape == (256, 256, 3) and ref.dtype == np.uint8
    np.testing.assert_array_equal(ref, stain.reference_he_image())  # deterministic
    n, mean, std = np_reinhard_stats(ref)
    assert _core.reinhard_stats(ref)[0] == n
    norm = stain.get_normalizer("reinhard")
    np.testing.assert_allclose(norm.lab_mean_, mean, atol=1e-6)
    np.testing.assert_allclose(norm.lab_std_, std, rtol=1e-5)
    # The image is H&E made with the default matrix: Macenko recovers it and a white share exists.
    m, _ = np_macenko_estimate(ref)
    assert np.abs(m - REF_M).max() < 0.06
    assert 0.1 < (ref.min(axis=2) >= 250).mean() < 0.5


def test_reinhard_fit_and_set_reference(rng):
    target = render_he(rng, 96, 96, m=OTHER_M)
    norm = stain.ReinhardNormalizer().fit(target)
    _, mean, std = np_reinhard_stats(target)
    np.testing.assert_allclose(norm.lab_mean_, mean, atol=1e-6)
    np.testing.assert_allclose(norm.lab_std_, std, rtol=1e-5)
    with pytest.raises(InvalidArgumentError):
        norm.set_reference([0, 0, 0], [0.1, 0.0, 0.1])
    norm.set_reference([-0.3, 0.0, 0.01], [0.2, 0.03, 0.01])
    np.testing.assert_allclose(norm.lab_std_, [0.2, 0.03, 0.01])


# ----------------------------------------------------------------------------- Python layer
def test_registry_batches_validation_and_pickle(rng):
    assert set(stain.available_normalizers()) == {"macenko", "reinhard", "none"}
    with pytest.raises(InvalidArgumentError, match="unknown stain normalizer"):
        stain.get_normalizer("vahadane")
    tiles = np.stack([render_he(rng, 48, 48), np.full((48, 48, 3), 255, np.uint8)])
    ident = stain.get_normalizer("none")
    assert ident.core is None
    np.testing.assert_array_equal(ident.transform(tiles), tiles)
    for name in ("macenko", "reinhard"):
        norm = stain.get_normalizer(name, min_tissue=400)
        out, outcomes = norm.transform(tiles, return_outcome=True)
        for i in range(2):
            np.testing.assert_array_equal(out[i], norm.transform(tiles[i]))
        assert [o.status for o in outcomes][1] == StainStatus.PASSED_THROUGH
        clone = pickle.loads(pickle.dumps(norm.fit(render_he(rng, 64, 64, m=OTHER_M))))
        np.testing.assert_array_equal(clone.transform(tiles[0]), norm.transform(tiles[0]))
        assert repr(clone) == repr(norm) and "min_tissue=400" in repr(norm)
        with pytest.raises(InvalidArgumentError, match="uint8"):
            norm.transform(tiles[0].astype(np.float32))
        with pytest.raises(InvalidArgumentError, match="shape"):
            norm.transform(np.zeros((8, 8, 4), np.uint8))
        with pytest.raises(InvalidArgumentError, match="uint8"):
            norm.core.transform(tiles[0].astype(np.int16))  # the binding checks too
    with pytest.raises(InvalidArgumentError):
        stain.MacenkoNormalizer(min_tissue=10, min_tissue_fallback=50)
    # Non-contiguous input is accepted and left untouched.
    view = tiles[0][:, ::-1]
    before = view.copy()
    stain.MacenkoNormalizer().transform(view)
    np.testing.assert_array_equal(view, before)


def test_transform_is_thread_safe(rng):
    tiles = [render_he(rng, 64, 64, h_scale=s) for s in (0.6, 0.9, 1.2, 1.5)]
    for norm in (stain.MacenkoNormalizer(), stain.ReinhardNormalizer()):
        want = [norm.transform(t) for t in tiles]
        with ThreadPoolExecutor(4) as pool:
            got = list(pool.map(norm.transform, tiles * 4))
        for i, g in enumerate(got):
            np.testing.assert_array_equal(g, want[i % 4])
