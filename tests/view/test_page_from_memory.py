"""A finishing translation builds the slide page and the features from what it holds in memory
(the band taps, the tables it just wrote, the thumbnail's H&E): it reads neither the map nor the
tables back and verifies no chunk (verification is the readers' job), and the page is byte for
byte the one ``write_slide_page`` makes from the finished folder."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest


@pytest.mark.slow
def test_finishing_reads_nothing_back_and_the_page_matches_the_folder(
        tiny_model, fast_config, tmp_path, monkeypatch):
    import virtime.io
    import virtime.io.omezarr
    import virtime.io.slide_folder
    from virtime.simulate.slides import make_slide
    from virtime.slide import Slide
    from virtime.stitch import thumbnail
    from virtime.view.page import write_slide_page

    # 1280 level-0 rows at 0.5 um/px -> 320 canvas rows at 2 um/px: two bands, two levels.
    slide_path = make_slide(tmp_path / "tall.svs", 512, 1280, mpp=0.5, seed=13)

    def refuse(*a, **k):
        pytest.fail("the finishing read back (or verified) what the translation just wrote")

    for module, name in [(virtime.io.omezarr, "read_ome_zarr"),
                         (virtime.io.omezarr, "verify_array"),
                         (virtime.io.slide_folder, "read_ome_zarr"),
                         (virtime.io, "read_features"), (pd, "read_parquet")]:
        monkeypatch.setattr(module, name, refuse)
    he_read: list[np.ndarray] = []
    real_reader = thumbnail.slide_he_reader

    def keep_he(*a, **k):
        read = real_reader(*a, **k)
        return lambda shape: he_read.append(read(shape)) or he_read[-1]

    monkeypatch.setattr(thumbnail, "slide_he_reader", keep_he)
    result = virtime.translate(slide_path, tiny_model, tmp_path / "out", fast_config)
    monkeypatch.undo()
    out = result.output_dir
    in_memory = (out / "index.html").read_bytes()
    assert len(he_read) == 1  # the H&E was read once, for the thumbnail, and reused

    # The page from the folder, as `virtime view` / the report make it (the summary hidden, as
    # it was not written yet when the translation made its page).
    summary = out / "summary.json"
    summary.rename(tmp_path / "summary.json")
    from_folder = write_slide_page(out, slide=Slide(slide_path), he=he_read[0]).read_bytes()
    assert from_folder == in_memory
    assert b"CD8" in in_memory and in_memory.count(b"data:image/jpeg") >= 24  # not vacuous
