"""Report galleries: extremes of a named feature from the slide folders, the demo's planted-group
gallery with ground truth beside virtual mIF, small JPEG panels that Chromium decodes offline."""

from __future__ import annotations

import base64
import io
import json
import re

import numpy as np
import pandas as pd
import pytest

from virtime.channels import channel_index
from virtime.report import ReportSection, build_report
from virtime.report.gallery import extreme_slides, feature_channels, gallery_section

_IMG = re.compile(r"<img alt='([^']*)' src='data:image/jpeg;base64,([^']+)'")


def _size(data: str) -> tuple[int, int]:
    from PIL import Image

    return Image.open(io.BytesIO(base64.b64decode(data))).size


@pytest.fixture(scope="module")
def slides_root(tmp_path_factory, syn, output_dir):
    root = tmp_path_factory.mktemp("gallery")
    slide = json.loads((output_dir / "summary.json").read_text())["slide"]
    for sid, v in (("A", 0.5), ("B", 2.0), ("C", 0.1)):
        syn.make_output(root, sid, features={"CD8.tumour_density": v, "CK.density": 1.0},
                        slide=slide)
    return root / "out"


def test_feature_channels_and_extremes():
    assert feature_channels("CD8.tumour_density") == ["CD8", "CK"]
    assert feature_channels("CD8+CD3.density") == ["CD3", "CD8"]  # registry order
    assert feature_channels("Ki67.density") == ["Ki67"]
    s = pd.Series({"a": 1.0, "b": 3.0, "c": 2.0, "d": np.nan})
    assert extreme_slides(s) == [("highest", "b", 3.0), ("lowest", "a", 1.0)]


def test_gallery_section_shows_highest_and_lowest(slides_root, tmp_path):
    sec = gallery_section(slides_root, "CD8.tumour_density", max_px=128)
    html = sec.blocks[-1].html
    assert html.index("highest CD8.tumour_density</b> · B") < html.index(
        "lowest CD8.tumour_density</b> · C")
    alts = [a for a, _ in _IMG.findall(html)]
    assert alts == ["H&amp;E", "virtual composite", "virtual CD8", "virtual CK"] * 2
    assert all(_size(d) == (128, 96) for _, d in _IMG.findall(html))
    assert len(html) < 100_000


def test_missing_feature_is_a_clear_error(slides_root):
    from virtime.errors import InputDataError
    from virtime.report.gallery import slide_feature_values

    with pytest.raises(InputDataError, match="no slide folder has feature"):
        slide_feature_values(slides_root, "CD20.density")


def _cohort(root, syn, slide):
    """A cohort folder as simulate_cohort + the demo lay it out, four slides."""
    from virtime.features import write_features

    clin = pd.DataFrame({"patient_id": ["P0", "P1", "P2", "P3"],
                         "subtype": ["COAD", "COAD", "LUAD", "LUAD"], "KRAS": [0, 0, 1, 0],
                         "MSI-high": [1, 0, 0, 0], "stage": ["I", "IV", "IV", "I"]})
    clin.to_csv(root / "clinical.csv", index=False)
    pd.DataFrame({"slide_id": [f"S{i}" for i in range(4)], "patient_id": clin["patient_id"],
                  "path": ""}).to_csv(root / "slides.csv", index=False)
    (root / "truth_features").mkdir()
    (root / "truth_mif").mkdir()
    for i in range(4):
        feats = {"CD8.tumour_density": float(i), "CD138.density": 1.0 + i, "Ki67.density": 2.0,
                 "CK.density": 1.0}
        syn.make_output(root, f"S{i}", out_name="virtual", features=feats, slide=slide)
        write_features([{"slide_id": f"S{i}", **feats}], root / "truth_features" / f"S{i}.parquet")
        prob = np.zeros((23, *syn.CANVAS), np.uint8)
        prob[channel_index("CK"), :40] = 255  # the truth differs from the virtual mIF
        np.savez(root / "truth_mif" / f"S{i}.npz", prob=prob, tissue=np.ones(syn.CANVAS, bool))
    return root


@pytest.mark.slow
def test_demo_gallery_and_chromium(tmp_path, syn, browser, output_dir):
    from virtime.demo.report import demo_gallery

    slide = json.loads((output_dir / "summary.json").read_text())["slide"]
    sec = demo_gallery(_cohort(tmp_path, syn, slide), max_px=96)
    html = "".join(getattr(b, "html", "") for b in sec.blocks)
    labels = re.findall(r"<b>([^<]+)</b> · (S\d)", html)
    assert labels == [("MSI-high vs MSS: MSI-high", "S0"), ("MSI-high vs MSS: MSS", "S2"),
                      ("KRAS-mutant vs wild-type LUAD: KRAS-mutant", "S2"),
                      ("KRAS-mutant vs wild-type LUAD: wild-type LUAD", "S3"),
                      ("stage IV vs stage I: stage IV", "S1"), ("stage IV vs stage I: stage I", "S0")]
    alts = [a for a, _ in _IMG.findall(html)][:8]
    assert alts == ["H&amp;E", "ground truth composite", "virtual composite", "ground truth CD8",
                    "virtual CD8", "ground truth CK", "virtual CK", "H&amp;E"]
    assert "CD8.tumour_density ground truth = 0" in html
    path = build_report([sec], tmp_path / "r.html")
    assert path.stat().st_size < 300_000
    browser.goto(path.as_uri())
    res = browser.evaluate("Array.from(document.images).map(i => [i.complete, i.naturalWidth,"
                           " i.naturalHeight])")
    assert len(res) == len(_IMG.findall(html)) > 30
    assert all(ok and (w, h) == (64, 48) for ok, w, h in res)  # pyramid level 2: <= 96 px
    urls = browser.requested_urls()
    assert all(u.startswith(("data:", path.as_uri())) for u in urls), urls
