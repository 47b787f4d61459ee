"""A slide given by a relative path is found again from any folder: the summary records it
absolutely, and an older summary's relative path falls back to its absolute ``source.path``."""

from __future__ import annotations

import json
import shutil

import pytest

import virtime
from virtime.io import SlideFolder
from virtime.view import slide_panels
from virtime.view.tiles import ViewSource


@pytest.mark.slow
def test_translated_from_a_relative_path_then_viewed_from_elsewhere(small_slide, tiny_model,
                                                                   fast_config, tmp_path,
                                                                   monkeypatch):
    """Old code wrote the path as typed ("slides/s.svs"): the viewer, the slide page and the
    report galleries looked for it relative to wherever they ran ("not there any more")."""
    (tmp_path / "work" / "slides").mkdir(parents=True)
    shutil.copy(small_slide, tmp_path / "work" / "slides" / "s.svs")
    monkeypatch.chdir(tmp_path / "work")
    result = virtime.translate("slides/s.svs", tiny_model, "out", fast_config)
    out = (tmp_path / "work" / result.output_dir).resolve()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    expected = tmp_path / "work" / "slides" / "s.svs"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["slide"] == str(expected)
    assert SlideFolder(out).slide_path == expected
    view = ViewSource(out)
    assert view.slide.path.resolve() == expected.resolve()
    assert set(slide_panels(out, ["CD8"], max_px=64)) >= {"H&E", "CD8"}  # report galleries

    # A summary written by an older virtime: the path as typed, and the absolute source path.
    summary["slide"] = "slides/s.svs"
    (out / "summary.json").write_text(json.dumps(summary))
    assert SlideFolder(out).slide_path == expected.resolve()
    assert ViewSource(out).slide.dimensions == view.slide.dimensions
    assert set(slide_panels(out, ["CD8"], max_px=64)) >= {"H&E", "CD8"}
