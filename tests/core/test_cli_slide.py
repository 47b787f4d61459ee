"""``virtime info`` and ``virtime tiles`` end to end, including their one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from virtime.cli import main
from virtime.slide import Slide


def test_info_json(slide_dir, capsys):
    assert main(["info", str(slide_dir / "aperio.svs"), "--json", "--min-tissue", "0"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["vendor"] == "aperio" and info["mpp"] == pytest.approx(0.25)
    assert [lvl["width"] for lvl in info["levels"]] == [2048, 512]
    assert info["tiling"]["tiles"] == info["tiling"]["grid_tiles"] == 12  # 4 x 3, hand count


def test_tiles_written_match_slide(slide_dir, tmp_path):
    out = tmp_path / "tiles_out"
    assert main(["tiles", str(slide_dir / "aperio.svs"), "-o", str(out), "--tile-size", "256",
                 "--min-tissue", "0.3", "-q"]) == 0
    table = pd.read_parquet(out / "tiles.parquet")
    assert len(table) > 0 and (table["tissue_fraction"] >= 0.3).all()
    slide = Slide(slide_dir / "aperio.svs")
    row = table.iloc[len(table) // 2]
    png = np.asarray(Image.open(out / row["file"]))
    np.testing.assert_array_equal(png, slide.read_region(row["x"], row["y"], 0, 256, 256))


def test_tiles_with_macenko(slide_dir, tmp_path):
    out = tmp_path / "norm"
    assert main(["tiles", str(slide_dir / "aperio.svs"), "-o", str(out), "--tile-size", "256",
                 "--normalize", "macenko", "--limit", "3", "-q"]) == 0
    table = pd.read_parquet(out / "tiles.parquet")
    assert len(table) == 3 and set(table["stain"]) <= {"normalized", "fallback_matrix",
                                                       "passed_through"}


@pytest.mark.parametrize(
    "args,needle",
    [
        (["info", "{d}/missing.svs"], "missing.svs: no such file"),
        (["info", "{d}/nompp.tif"], "nompp.tif: no microns-per-pixel"),
        (["tiles", "{d}/nompp.tif", "-o", "{t}/x", "--tile-size", "9999"], "nompp.tif"),
        (["info", "{d}/aperio.svs", "--tile-size", "4096"], "smaller than one 4096-px tile"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(slide_dir, tmp_path, capsys, args, needle):
    argv = [a.format(d=slide_dir, t=tmp_path) for a in args]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0]


def test_nompp_works_with_override(slide_dir, capsys):
    assert main(["info", str(slide_dir / "nompp.tif"), "--mpp", "0.5", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["mpp"] == 0.5
