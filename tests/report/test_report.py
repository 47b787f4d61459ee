"""The HTML report: self-contained, every figure a decodable PNG, sections extensible; Chromium
loads it offline and decodes every image (skipped where Chromium is absent)."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from matplotlib.image import imread

from virtime.report import (
    FigureBlock,
    ReportSection,
    TableBlock,
    TextBlock,
    build_report,
    figure_block,
    write_report,
)
from virtime.stats import associate, cross_cohort_validation, join_features, survival_analysis

_IMG = re.compile(r"<img[^>]*src='data:image/png;base64,([^']+)'")


def _figure(k: int) -> Figure:
    fig = Figure(figsize=(2, 2))
    fig.add_subplot().plot(np.arange(5) * k)
    return fig


def _synthetic(rng: np.random.Generator, n_per_type: int = 60):
    from virtime.channels import PROTEIN_CHANNELS

    types = {"LUNG": ("LUAD", "LUSC"), "BOWEL": ("COAD", "READ")}
    rows = [(ct, st) for ct, subs in types.items() for st in subs for _ in range(n_per_type // 2)]
    clin = pd.DataFrame(rows, columns=["cancer_type", "subtype"])
    n = len(clin)
    clin.insert(0, "patient_id", [f"P{i}" for i in range(n)])
    clin["KRAS"] = rng.integers(0, 2, n)
    clin["stage"] = rng.choice(["I", "II", "III", "IV"], n)
    clin["os_time"] = rng.exponential(300, n)
    clin["os_event"] = rng.integers(0, 2, n)
    feats = pd.DataFrame(rng.gamma(2.0, 0.1, size=(n, len(PROTEIN_CHANNELS))),
                         columns=[f"{c}.density" for c in PROTEIN_CHANNELS])
    feats.insert(0, "patient_id", clin["patient_id"])
    return join_features(feats, clin)


def test_build_report_is_self_contained(tmp_path: Path):
    secs = [ReportSection("Intro").add(TextBlock("Hello <world> & co.\n\nSecond paragraph.")),
            ReportSection("Figures", [figure_block(_figure(1), "one"),
                                      figure_block(_figure(2), "two")]),
            ReportSection("Table").add(TableBlock(pd.DataFrame({"a": range(80)}), "rows",
                                                  max_rows=10))]
    path = build_report(secs, tmp_path / "sub" / "r.html", title="T")
    text = path.read_text()
    assert not list(path.parent.glob("*.tmp"))
    imgs = _IMG.findall(text)
    assert len(imgs) == 2
    for data in imgs:
        assert imread(io.BytesIO(base64.b64decode(data))).shape[2] in (3, 4)
    assert "&lt;world&gt; &amp; co." in text and text.count("<p>") >= 2
    assert "first 10 of 80 rows" in text
    # nothing fetched from outside the file
    assert not re.search(r"(src|href)=['\"](https?:|//|file:)", text)
    assert "<link" not in text and "<script" not in text
    assert [m for m in re.findall(r"<h2>(.*?)</h2>", text)] == ["Intro", "Figures", "Table"]


@pytest.mark.slow
def test_standard_report_with_extra_section(tmp_path: Path, rng):
    a = _synthetic(rng)
    b = _synthetic(rng, 40)
    ra = associate(a, levels=("pan-cancer", "cancer_type"))
    rb = associate(b, levels=("pan-cancer", "cancer_type"))
    surv = survival_analysis(a, levels=("pan-cancer",), folds=3, min_events=5)
    val = cross_cohort_validation(a, b, ra, rb)
    extra = ReportSection("Recovery of planted effects").add(
        TableBlock(pd.DataFrame({"effect": ["CD8~KRAS"], "recovered": [True]})))
    path = write_report(tmp_path / "report.html", cohort=a, associations=ra, survival=surv,
                        validation=val, tiers={"CD8": "high", "CK": "low"},
                        extra_sections=[extra])
    text = path.read_text()
    titles = re.findall(r"<h2>(.*?)</h2>", text)
    assert titles == ["Cohort summary", "Population TIME spectrum", "Associations", "Survival",
                      "Cross-cohort validation", "Recovery of planted effects"]
    imgs = _IMG.findall(text)
    assert len(imgs) >= 8
    for data in imgs:
        assert imread(io.BytesIO(base64.b64decode(data))).size > 0


_CHECK = ("<script>window.addEventListener('load',function(){var im=document.images,ok=0;"
          "for(var i=0;i<im.length;i++){if(im[i].complete&&im[i].naturalWidth>0)ok++;}"
          "var d=document.createElement('div');d.id='virtime-check';"
          "d.textContent='decoded '+ok+' of '+im.length;document.body.appendChild(d);});</script>")


def _chromium_decoded(path: Path, exe: str) -> tuple[int, int]:
    """Loads a copy of ``path`` (plus a counting script) in headless Chromium, offline."""
    probe = path.with_name("probe_" + path.name)
    probe.write_text(path.read_text().replace("</body>", _CHECK + "</body>"))
    out = subprocess.run(
        [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--no-first-run", "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()],
        capture_output=True, text=True, timeout=120, check=False)
    m = re.search(r"decoded (\d+) of (\d+)", out.stdout)
    assert m, f"chromium gave no result: {out.stderr[-500:]}"
    return int(m.group(1)), int(m.group(2))


@pytest.mark.slow
def test_chromium_decodes_every_image(tmp_path: Path):
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium not installed (apt-get install chromium)")
    good = build_report([ReportSection("F", [figure_block(_figure(k), str(k)) for k in range(3)])],
                        tmp_path / "good.html")
    assert _chromium_decoded(good, exe) == (3, 3)
    # the check can fail: a corrupt PNG is counted as not decoded
    bad = build_report([ReportSection("F", [figure_block(_figure(1)),
                                            FigureBlock(b"\x89PNG not really")])],
                       tmp_path / "bad.html")
    assert _chromium_decoded(bad, exe) == (1, 2)
