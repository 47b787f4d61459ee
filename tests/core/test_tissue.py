"""Tissue detection: Otsu against a numpy reference, planted tissue recovered, glass left alone."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from virtime.simulate.slides import synthetic_he, write_slide
from virtime.slide import Slide
from virtime.tissue import TissueConfig, detect_tissue, detect_tissue_image


def _otsu_numpy(values: np.ndarray) -> int:
    """Textbook Otsu: maximize between-class variance over thresholds t (classes <= t, > t)."""
    hist = np.bincount(values.ravel(), minlength=256).astype(np.float64)
    levels = np.arange(256)
    best, best_t = -1.0, 255
    for t in range(255):
        w0, w1 = hist[: t + 1].sum(), hist[t + 1 :].sum()
        if w0 == 0 or w1 == 0:
            continue
        m0 = (hist[: t + 1] * levels[: t + 1]).sum() / w0
        m1 = (hist[t + 1 :] * levels[t + 1 :]).sum() / w1
        between = w0 * w1 * (m0 - m1) ** 2
        if between > best + 1e-9 * abs(best):
            best, best_t = between, t
    return best_t


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_otsu_matches_numpy_reference(seed):
    from virtime import _core

    rng = np.random.default_rng(seed)
    values = np.concatenate([rng.normal(60, 15, 3000), rng.normal(180, 25, 5000)])
    values = np.clip(values, 0, 255).astype(np.uint8)
    assert _core.otsu_threshold(values) == _otsu_numpy(values)


def test_planted_tissue_is_recovered(rng):
    mpp = 12.0
    rgb, truth = synthetic_he(400, 300, mpp=mpp, rng=rng, nuclei_per_mm2=200.0,
                              nucleus_radius_um=8.0)
    mask = detect_tissue_image(rgb, mpp).mask
    iou = (mask & truth).sum() / (mask | truth).sum()
    assert iou > 0.9


def test_slide_level_mask_and_scale(slide_dir):
    slide = Slide(slide_dir / "aperio.svs")
    tissue = detect_tissue(slide)
    # Level 1 of this slide is 1 um/px; the detector box-averages by floor(12 / 1) = 12.
    assert tissue.downsample == pytest.approx(48.0)
    assert tissue.mpp == pytest.approx(12.0)
    assert tissue.mask.shape == (-(-384 // 12), -(-512 // 12))
    assert 0.2 < tissue.fraction < 0.8
    assert tissue.fraction == tissue.mask.sum() / tissue.mask.size
    assert tissue.mask.dtype == bool and set(np.unique(tissue.mask.view(np.uint8))) <= {0, 1}
    with pytest.raises(AttributeError):
        tissue.downsample = 1.0
    again = pickle.loads(pickle.dumps(tissue))  # a value, as the dataclass it replaced was
    np.testing.assert_array_equal(again.mask, tissue.mask)
    assert (again.downsample, again.mpp, again.saturation_threshold, again.grey_threshold,
            again.fraction) == (tissue.downsample, tissue.mpp, tissue.saturation_threshold,
                                tissue.grey_threshold, tissue.fraction)
    mask = tissue.mask
    del tissue  # the view keeps the C++ mask alive
    assert mask.shape == (32, 43) and 0 < mask.sum() < mask.size


@pytest.mark.parametrize(
    "name,image",
    [
        ("white glass", lambda r: np.clip(r.normal(243, 2, (300, 300, 3)), 0, 255)),
        ("blank slide", lambda r: np.full((300, 300, 3), 250.0)),
        ("uniformly dark", lambda r: np.clip(r.normal(20, 2, (300, 300, 3)), 0, 255)),
        ("uniformly dark grey", lambda r: np.full((300, 300, 3), 70.0)),
        ("uniform pink", lambda r: np.tile([200.0, 120.0, 170.0], (300, 300, 1))),
    ],
)
def test_no_tissue_on_background_or_uniform_slides(name, image, rng, tmp_path):
    rgb = image(rng).astype(np.uint8)
    assert detect_tissue_image(rgb, 12.0).mask.sum() == 0, name
    slide = Slide(write_slide(tmp_path / "s.tif", np.repeat(np.repeat(rgb, 8, 0), 8, 1), 1.5,
                              fmt="generic"))
    assert detect_tissue(slide).fraction == 0.0


def test_specks_are_removed_and_holes_filled():
    rgb = np.full((200, 200, 3), 245, np.uint8)
    rgb[40:160, 40:160] = (180, 90, 160)   # a tissue square, 1.44 mm^2 at 10 um/px
    rgb[95:100, 95:100] = 245               # a 5x5 hole (2,500 um^2 < 40,000): filled
    rgb[10:13, 10:13] = (120, 40, 110)      # a 3x3 speck (900 um^2 < 10,000): removed
    mask = detect_tissue_image(rgb, 10.0, TissueConfig()).mask
    assert mask[97, 97] and not mask[11, 11]
    assert abs(int(mask.sum()) - 120 * 120) <= 4 * 120  # the square, up to its corners
