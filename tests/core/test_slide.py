"""Slide reading against openslide-python on the same files, and the bad-input paths."""

from __future__ import annotations

import numpy as np
import openslide
import pytest

import virtime
from virtime import errors
from virtime.simulate.slides import write_slide
from virtime.slide import Slide


def _reference_region(path, x, y, level, w, h) -> np.ndarray:
    """openslide-python's RGBA (un-premultiplied) composited on white, computed in numpy."""
    with openslide.OpenSlide(str(path)) as osr:
        rgba = np.asarray(osr.read_region((x, y), level, (w, h))).astype(np.float64)
    alpha = rgba[..., 3:4] / 255.0
    return np.rint(rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)


@pytest.mark.parametrize("name", ["aperio.svs", "generic.tif"])
def test_metadata_matches_openslide_python(slide_dir, name):
    path = slide_dir / name
    slide = Slide(path)
    with openslide.OpenSlide(str(path)) as ref:
        assert slide.vendor == ref.properties["openslide.vendor"]
        assert slide.level_count == ref.level_count
        assert slide.level_dimensions == list(ref.level_dimensions)
        assert slide.level_downsamples == pytest.approx(list(ref.level_downsamples))
        assert slide.properties == dict(ref.properties)
        assert slide.mpp == pytest.approx(float(ref.properties["openslide.mpp-x"]))


def test_mpp_read_from_aperio_description(slide_dir):
    slide = Slide(slide_dir / "aperio.svs")
    assert slide.mpp == pytest.approx(0.25)
    assert slide.objective_power == pytest.approx(40)


@pytest.mark.parametrize(
    "x,y,level,w,h",
    [(0, 0, 0, 300, 200), (1000, 700, 0, 257, 129), (1900, 1400, 0, 300, 300), (-50, -20, 0, 100, 80),
     (0, 0, 1, 512, 384), (400, 100, 1, 120, 90)],
)
def test_read_region_matches_openslide_python(slide_dir, x, y, level, w, h):
    path = slide_dir / "aperio.svs"
    got = Slide(path).read_region(x, y, level, w, h)
    assert got.shape == (h, w, 3) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, _reference_region(path, x, y, level, w, h))


def test_outside_slide_is_white(slide_dir):
    region = Slide(slide_dir / "aperio.svs").read_region(5000, 5000, 0, 64, 64)
    assert (region == 255).all()


def test_missing_file(tmp_path):
    with pytest.raises(errors.SlideNotFoundError, match="nope.svs: no such file"):
        Slide(tmp_path / "nope.svs")


def test_not_a_slide(tmp_path):
    bogus = tmp_path / "notes.svs"
    bogus.write_text("this is not a slide\n")
    with pytest.raises(errors.SlideFormatError, match="notes.svs"):
        Slide(bogus)


def test_truncated_slide(slide_dir, tmp_path):
    data = (slide_dir / "aperio.svs").read_bytes()
    cut = tmp_path / "truncated.svs"
    cut.write_bytes(data[: len(data) // 3])
    # Either the open fails or the first read of the missing part does: both name the file.
    with pytest.raises((errors.SlideFormatError, errors.SlideReadError), match="truncated.svs"):
        s = Slide(cut)
        w, h = s.dimensions
        s.read_region(0, 0, 0, w, h)


@pytest.mark.parametrize("keep", [0.05, 0.5, 0.9])
def test_truncated_tiff_is_called_truncated_not_unsupported(slide_dir, tmp_path, keep):
    """OpenSlide calls a cut SVS "unsupported"; the error must say the file is truncated."""
    data = (slide_dir / "aperio.svs").read_bytes()
    cut = tmp_path / "cut.svs"
    cut.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(errors.SlideFormatError, match=r"cut\.svs: truncated") as info:
        Slide(cut)
    assert f"{len(data[: int(len(data) * keep)]):,} bytes" in str(info.value)


def test_missing_mpp_is_an_error_unless_given(slide_dir):
    slide = Slide(slide_dir / "nompp.tif")
    assert not slide.has_mpp
    with pytest.raises(errors.MissingMppError, match="nompp.tif.*--mpp"):
        _ = slide.mpp
    assert Slide(slide_dir / "nompp.tif", mpp=0.5).mpp == 0.5


def test_absurd_mpp_is_refused(tmp_path, rng):
    rgb = rng.integers(0, 255, (600, 600, 3), dtype=np.uint8)
    # 1 pixel per centimetre: 10,000 um/px, the wrong-unit resolution tag seen in the wild.
    path = write_slide(tmp_path / "absurd.tif", rgb, 1e4, fmt="generic")
    with pytest.raises(errors.InvalidMppError, match="absurd.tif"):
        _ = Slide(path).mpp
    with pytest.raises(errors.InvalidMppError):
        Slide(path, mpp=-1.0)


def test_error_mapping_covers_every_core_kind():
    from virtime import _core

    expected = [
        errors.VirtimeError, errors.SlideNotFoundError, errors.SlideFormatError,
        errors.SlideReadError, errors.MissingMppError, errors.InvalidMppError,
        errors.SlideTooSmallError, errors.OpenSlideLibraryError, errors.InvalidArgumentError,
        errors.CudaError, errors.BatcherError,
    ]
    for kind, cls in enumerate(expected):
        with pytest.raises(cls, match="f.svs: why"):
            _core._raise_for_test(kind, "f.svs", "why")
    assert issubclass(errors.SlideFormatError, ValueError)
    assert issubclass(errors.SlideNotFoundError, FileNotFoundError)


def test_close_releases_the_handle_and_later_use_is_one_clear_error(slide_dir):
    import gc
    import weakref

    path = slide_dir / "aperio.svs"
    slide = Slide(path)
    first = slide.read_region(0, 0, 0, 32, 32)
    core = weakref.ref(slide._core)  # the compiled slide that owns the OpenSlide handle
    slide.close()
    gc.collect()
    assert slide.closed and core() is None  # nothing keeps the handle open
    with pytest.raises(errors.SlideClosedError, match=r"aperio\.svs: the slide is closed"):
        slide.read_region(0, 0, 0, 32, 32)
    with pytest.raises(ValueError):  # a ValueError, as reading a closed file is
        _ = slide.mpp
    slide.close()  # twice is harmless
    assert "closed" in repr(slide)
    with virtime.open_slide(path) as again:
        np.testing.assert_array_equal(again.read_region(0, 0, 0, 32, 32), first)
        inner = weakref.ref(again._core)
    gc.collect()
    assert again.closed and inner() is None
    with pytest.raises(errors.SlideClosedError):
        again.read_region(0, 0, 0, 32, 32)
