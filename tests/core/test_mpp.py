"""One plausible mpp range and one check: opening a slide, translating it and the CLI agree."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from virtime.errors import InvalidMppError
from virtime.mpp import MPP_RANGE, OPEN_TOLERANCE, check_mpp, mpp_range_text


@pytest.mark.parametrize("bad", [0.0, -0.25, math.nan, math.inf, "x", None])
def test_not_a_positive_number_is_refused(bad) -> None:
    with pytest.raises(InvalidMppError, match=r"s\.svs: mpp .* given is not a positive number"):
        check_mpp(bad, path="s.svs", source="given", mpp_range=None)


def test_range_and_tolerance() -> None:
    lo, hi = MPP_RANGE
    assert check_mpp(str(lo), path="s", source="x") == lo
    assert check_mpp(hi, path="s", source="x") == hi
    for outside in (lo * 0.99, hi * 1.01):
        with pytest.raises(InvalidMppError, match=f"outside the plausible range {lo:g}-{hi:g} "):
            check_mpp(outside, path="s", source="x")
    widened = check_mpp(hi * OPEN_TOLERANCE, path="s", source="x", tolerance=OPEN_TOLERANCE)
    assert widened == hi * OPEN_TOLERANCE
    with pytest.raises(InvalidMppError):
        check_mpp(hi * OPEN_TOLERANCE * 1.01, path="s", source="x", tolerance=OPEN_TOLERANCE)
    assert check_mpp(1e6, path="s", source="x", mpp_range=None) == 1e6


def test_translation_and_cli_use_the_one_range() -> None:
    from virtime.cli import build_parser
    from virtime.translation import TranslateConfig

    assert TranslateConfig().mpp_range == MPP_RANGE == (0.1, 2.0)
    assert mpp_range_text() == "0.1-2"
    translate = build_parser()._subparsers._group_actions[0].choices["translate"]
    allow = next(a for a in translate._actions if "--allow-mpp" in a.option_strings)
    assert f"outside {mpp_range_text()} um/px" in allow.help


def test_open_reads_an_unusual_scan_that_translation_refuses(tmp_path, rng) -> None:
    from virtime.simulate.slides import write_slide
    from virtime.slide import Slide
    from virtime.translation import TranslateConfig
    from virtime.translation.request import check_slide_mpp

    rgb = rng.integers(0, 255, (300, 300, 3), dtype=np.uint8)
    coarse = write_slide(tmp_path / "coarse.tif", rgb, 5.0, fmt="generic")  # outside 0.1-2
    slide = Slide(coarse)
    assert slide.mpp == pytest.approx(5.0) and not slide.mpp_given
    with pytest.raises(InvalidMppError, match=r"coarse\.tif: mpp 5 um/px from the slide metadata"):
        check_slide_mpp(slide, TranslateConfig(max_upsample=100.0), 0.5)
    allowed = TranslateConfig(max_upsample=100.0, allow_mpp=True)
    assert check_slide_mpp(slide, allowed, 0.5) == pytest.approx(5.0)
    given = Slide(coarse, mpp=1.5)  # the caller's word skips the range (not the upsampling)
    assert given.mpp_given
    assert check_slide_mpp(given, dataclasses.replace(allowed, allow_mpp=False), 0.5) == 1.5
