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
from virtime.translation.run import translate_slide


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
        pre = [translate_slide(p, tiny_model, tmp_path / "pre", cfg, prepared=ahead.take(p))
               for p in two_slides]
    for a, b in zip(seq, pre):
        ca, ta = _outputs(a)
        cb, tb = _outputs(b)
        np.testing.assert_array_equal(ca, cb)
        pd.testing.assert_frame_equal(ta, tb)
        assert a.record["tissue_fraction"] == b.record["tissue_fraction"]


@pytest.mark.slow
def test_cli_translates_several_slides_with_one_engine_and_reads_ahead(
        two_slides, tiny_weights, tmp_path, monkeypatch):
    """``virtime translate a b``: one engine for both slides (not rebuilt per slide), and on the
    device path the second slide's first batches read while the first one runs; outputs equal
    one slide per command."""
    import json

    import virtime.engines
    from virtime.cli import main
    from virtime.translation import device_path

    flags = ["--weights", str(tiny_weights), "-q", "--backend", "torch", "--tile-size", "128",
             "--batch-size", "2", "--window-batch", "8", "--threads", "2", "--no-features"]
    for p in two_slides:  # reference: one command per slide, host path
        assert main(["translate", str(p), "-o", str(tmp_path / "one"), *flags]) == 0
    built = []
    real = virtime.engines.create_engine
    monkeypatch.setattr(virtime.engines, "create_engine",
                        lambda *a, **k: built.append(1) or real(*a, **k))
    monkeypatch.setattr(device_path, "use_device_path", lambda engine, config: True)
    assert main(["translate", *map(str, two_slides), "-o", str(tmp_path / "both"), *flags]) == 0
    assert len(built) == 1
    for p in two_slides:
        a = np.asarray(zarr.open_group(str(tmp_path / "one" / p.stem / "mif.ome.zarr"))["0"][:])
        b = np.asarray(zarr.open_group(str(tmp_path / "both" / p.stem / "mif.ome.zarr"))["0"][:])
        assert a.shape == b.shape and np.abs(a.astype(int) - b.astype(int)).max() <= 1
    second = json.loads((tmp_path / "both" / two_slides[1].stem / "summary.json").read_text())
    assert second["timings_seconds"].get("read_ahead_s", 0) > 0  # its first batches came early
    alone = json.loads((tmp_path / "one" / two_slides[1].stem / "summary.json").read_text())
    assert "read_ahead_s" not in alone["timings_seconds"]  # one slide: nothing to overlap
