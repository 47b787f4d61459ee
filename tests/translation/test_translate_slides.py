"""Several slides in one run (virtime.translation.translate_slides): each slide's finishing writes
run beside the next slide's tile loop, the outputs equal one translate() per slide, the folder
stays locked until its writes are done, and an error in them is reported and loses nothing."""

from __future__ import annotations

import dataclasses
import errno
import threading

import numpy as np
import pandas as pd
import pytest
import zarr

import virtime
from virtime import errors
from virtime.translation import translate_slides
from virtime.translation.lock import LOCK_NAME
from virtime.translation.run import SlideRun

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def three_slides(tmp_path_factory):
    from virtime.simulate.slides import make_slide

    d = tmp_path_factory.mktemp("many")
    junk = d / "junk.svs"
    junk.write_text("not a slide")
    return [make_slide(d / "a.svs", 512, 384, mpp=0.5, seed=31), junk,
            make_slide(d / "c.svs", 384, 512, mpp=0.5, seed=32)]


def _level0(folder):
    return np.asarray(zarr.open_group(str(folder / "mif.ome.zarr"), mode="r")["0"][:])


def test_outputs_equal_one_translate_per_slide(three_slides, tiny_model, fast_config, tmp_path,
                                              monkeypatch):
    real = SlideRun.finish
    seen = []

    def finish(self):  # where the writes run, and whether the folder is still locked then
        seen.append((self.slide_id, threading.current_thread().name,
                     (self.out / LOCK_NAME).is_file()))
        return real(self)

    monkeypatch.setattr(SlideRun, "finish", finish)
    got = list(translate_slides(three_slides, tiny_model, tmp_path / "many", fast_config))
    assert [p for p, _ in got] == three_slides  # in order, the bad one too
    assert isinstance(got[1][1], errors.VirtimeError) and "junk.svs" in str(got[1][1])
    assert all(r.record["status"] == "done" for _, r in (got[0], got[2]))
    assert seen == [("a", "virtime-finish_0", True), ("c", "virtime-finish_0", True)]
    assert not list((tmp_path / "many").rglob(LOCK_NAME))  # released after the writes

    monkeypatch.setattr(SlideRun, "finish", real)
    for p in (three_slides[0], three_slides[2]):  # reference: one call per slide
        one = virtime.translate(p, tiny_model, tmp_path / "one", fast_config).output_dir
        many = tmp_path / "many" / p.stem
        np.testing.assert_array_equal(_level0(many), _level0(one))
        for table in ("tiles.parquet", "features.parquet"):
            pd.testing.assert_frame_equal(pd.read_parquet(many / table),
                                          pd.read_parquet(one / table))
        assert (many / "thumbnail.png").read_bytes() == (one / "thumbnail.png").read_bytes()


def test_an_error_in_the_background_writes_is_reported_and_resumable(
        three_slides, tiny_model, fast_config, tmp_path, monkeypatch):
    cfg = dataclasses.replace(fast_config, features=False)
    real = SlideRun.finish

    def full_disk(self):
        if self.slide_id == "a":
            raise OSError(errno.ENOSPC, "No space left on device", str(self.out / "tiles.parquet"))
        return real(self)

    monkeypatch.setattr(SlideRun, "finish", full_disk)
    slides = [three_slides[0], three_slides[2]]
    with pytest.raises(errors.OutputError, match="No space left on device"):
        list(translate_slides(slides, tiny_model, tmp_path, cfg))
    assert not list(tmp_path.rglob(LOCK_NAME))  # the lock went with the failed writes
    assert not (tmp_path / "a" / "summary.json").exists()  # not marked done
    monkeypatch.setattr(SlideRun, "finish", real)
    again = dict(translate_slides(slides, tiny_model, tmp_path, cfg))
    assert all(not isinstance(r, Exception) and r.record["status"] == "done"
               for r in again.values())
