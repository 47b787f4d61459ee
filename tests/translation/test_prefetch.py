"""Prefetch across slides: the next slide opened and its tissue detected in the background gives
the same outputs as a sequential run."""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pandas as pd
import pytest
import zarr

import virtime
from virtime.slide import Slide
from virtime.tissue import detect_tissue
from virtime.translation.prefetch import SlidePrefetcher


@pytest.fixture(scope="module")
def two_slides(tmp_path_factory):
    from virtime.simulate.slides import make_slide

    d = tmp_path_factory.mktemp("prefetch")
    return [make_slide(d / "a.svs", 512, 384, mpp=0.5, seed=21),
            make_slide(d / "b.svs", 384, 512, mpp=0.5, seed=22)]


def test_prefetcher_prepares_the_next_slide_in_the_background(two_slides, tmp_path) -> None:
    bad = tmp_path / "missing.svs"
    paths = [*two_slides, bad]
    with SlidePrefetcher(paths) as ahead:
        first = ahead.take(paths[0])
        assert first is not None and first.fits(paths[0], None)
        # While slide a "runs", b is being prepared on the prefetch thread.
        assert any(t.name.startswith("virtime-prefetch") for t in threading.enumerate())
        second = ahead.take(paths[1])
        assert second is not None and not second.fits(paths[1], 0.25)
        ref = detect_tissue(Slide(paths[1]))
        np.testing.assert_array_equal(second.tissue.mask, ref.mask)
        assert second.slide.dimensions == Slide(paths[1]).dimensions
        assert ahead.take(bad) is None  # failed: translate meets the error itself
        assert ahead.take(paths[0]) is None  # out of order: nothing prefetched
    assert SlidePrefetcher(paths[:1]).take(paths[0]) is None  # one slide: nothing to overlap


def _outputs(result):
    canvas = np.asarray(zarr.open_group(str(result.output_dir / "mif.ome.zarr"), mode="r")["0"][:])
    return canvas, pd.read_parquet(result.output_dir / "tiles.parquet")


@pytest.mark.slow
def test_prefetched_run_equals_sequential_run(two_slides, tiny_model, fast_config, tmp_path):
    cfg = dataclasses.replace(fast_config, features=False)
    seq = [virtime.translate(p, tiny_model, tmp_path / "seq", cfg) for p in two_slides]
    with SlidePrefetcher(two_slides) as ahead:
        pre = [virtime.translate(p, tiny_model, tmp_path / "pre", cfg, prepared=ahead.take(p))
               for p in two_slides]
    for a, b in zip(seq, pre):
        ca, ta = _outputs(a)
        cb, tb = _outputs(b)
        np.testing.assert_array_equal(ca, cb)
        pd.testing.assert_frame_equal(ta, tb)
        assert a.record["tissue_fraction"] == b.record["tissue_fraction"]
