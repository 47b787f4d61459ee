"""``virtime translate --weights flash_model.pth`` end to end: the outputs GigaTIME's run writes,
with values equal to a direct run of the Flash model on the same tiles."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import zarr
from direct_run import direct_tile_probs
from tiny_models import tiny_flash

from virtime.channels import CHANNEL_NAMES
from virtime.cli import main
from virtime.models import GigaTIME, GigaTIMEFlash, load
from virtime.models.checkpoints import save_official_layout


def _files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


@pytest.mark.slow
def test_translate_with_flash_weights(tmp_path):
    from virtime.simulate.slides import make_slide

    slide = make_slide(tmp_path / "slide.svs", 768, 512, mpp=0.25, seed=4)
    flash = tiny_flash(0)
    with torch.no_grad():
        flash.final_conv.bias.copy_(torch.linspace(-2, 2, 23))
    save_official_layout(flash, tmp_path / "flash_model.pth")
    save_official_layout(GigaTIME(filters=(4, 8, 16, 32, 64)), tmp_path / "gigatime.pth")
    for name in ("flash_model", "gigatime"):
        rc = main(["translate", str(slide), "-o", str(tmp_path / name), "--weights",
                   str(tmp_path / f"{name}.pth"), "--backend", "onnxruntime", "--threads", "1",
                   "--tile-size", "256", "--window-batch", "8", "-q", "--no-features"])
        assert rc == 0
    out_f, out_g = tmp_path / "flash_model" / "slide", tmp_path / "gigatime" / "slide"
    assert _files(out_f) == _files(out_g)
    z_f, z_g = (zarr.open_group(str(o / "mif.ome.zarr"), mode="r") for o in (out_f, out_g))
    assert z_f["0"].shape == z_g["0"].shape == (23, 512 // 8, 768 // 8)
    # Same geometry in the metadata (pixel sizes of every level); each map stamped with its model.
    assert (z_f.attrs["multiscales"][0]["datasets"] == z_g.attrs["multiscales"][0]["datasets"])
    summaries = [json.loads((o / "summary.json").read_text()) for o in (out_f, out_g)]
    assert [z.attrs["virtime"]["model_hash"] for z in (z_f, z_g)] == [
        s["model_hash"] for s in summaries] and summaries[0]["model_hash"] != summaries[1][
        "model_hash"]
    names = [c["label"] for c in z_f.attrs["omero"]["channels"]]
    assert names == [c["label"] for c in z_g.attrs["omero"]["channels"]] == list(CHANNEL_NAMES)
    tiles_f, tiles_g = (pd.read_parquet(o / "tiles.parquet") for o in (out_f, out_g))
    assert list(tiles_f.columns) == list(tiles_g.columns)
    assert tiles_f[["x", "y"]].equals(tiles_g[["x", "y"]]) and len(tiles_f) > 0
    summary = json.loads((out_f / "summary.json").read_text())
    model = load(tmp_path / "flash_model.pth")
    assert model.card.sha256 in json.dumps(summary)
    row = tiles_f.iloc[len(tiles_f) // 2]
    probs = direct_tile_probs(slide, model, row["x"], row["y"], size=256, window=256)
    for c in (0, 11, 22):
        assert row[f"{CHANNEL_NAMES[c]}.mean_probability"] == pytest.approx(probs[c].mean(),
                                                                            abs=1e-4)


def test_compare_bench_interleaves_on_one_slide(monkeypatch, tmp_path):
    from virtime import bench
    from virtime.models.card import ModelCard

    calls = []

    def fake_run_bench(model, **kw):
        calls.append((model.name, kw["slide"]))
        rate = {"a": 2.0, "b": 6.0}[model.name] * (1 + len(calls) / 10)
        return bench.BenchResult(tiles=3, pipeline_tiles_per_s=rate / 2, reference_tiles_per_s=1.0,
                                 engine_tiles_per_s=rate, stage_seconds={"tile_loop_wall": 1.0},
                                 settings={"tile_size": 512, "window": 256})

    class M:
        def __init__(self, name):
            self.name, self.card = name, ModelCard(architecture=name, config={})

    monkeypatch.setattr(bench, "run_bench", fake_run_bench)
    r = bench.compare_bench({"a": M("a"), "b": M("b")}, size=512, repeats=3,
                            workdir=str(tmp_path))
    assert [c[0] for c in calls] == ["a", "b", "b", "a", "a", "b"]
    assert len({c[1] for c in calls}) == 1 and calls[0][1].is_file()
    df = r.summary
    a = np.median([2.0 * (1 + k / 10) * 4 for k in (1, 4, 5)])
    b = np.median([6.0 * (1 + k / 10) * 4 for k in (2, 3, 6)])
    assert df.loc["a", "engine_windows_per_s"] == pytest.approx(a)
    assert df.loc["b", "engine_windows_ratio"] == pytest.approx(b / a)
    odd = M("c")
    odd.card.input_mpp = 0.5
    with pytest.raises(Exception, match="no common slide"):
        bench.compare_bench({"a": M("a"), "c": odd}, workdir=str(tmp_path))


def test_bench_cli_compares_flash_with_gigatime(monkeypatch, tmp_path, capsys):
    """CLI wiring of --compare (the real measurement is benchmarks/bench_models.py's job)."""
    from virtime import bench

    def fake_run_bench(model, **kw):
        rate = 8.0 if model.card.architecture == "gigatime-flash" else 2.0
        return bench.BenchResult(tiles=5, pipeline_tiles_per_s=rate / 2, reference_tiles_per_s=1.0,
                                 engine_tiles_per_s=rate, stage_seconds={"tile_loop_wall": 1.0},
                                 settings={"tile_size": 512, "window": 256, "backend": "onnxruntime",
                                           "precision": "fp32", "device": "cpu"})

    monkeypatch.setattr(bench, "run_bench", fake_run_bench)
    save_official_layout(GigaTIMEFlash(dim=64, heads=1, mlp_hidden=64, decoder=(16, 8, 8, 8)),
                         tmp_path / "flash_model.pth")
    save_official_layout(GigaTIME(filters=(4, 8, 16, 32, 64)), tmp_path / "gigatime.pth")
    argv = ["bench", "--weights", str(tmp_path / "gigatime.pth"), "--compare",
            str(tmp_path / "flash_model.pth"), "--size", "512", "--repeats", "2",
            "--backend", "onnxruntime"]
    assert main(argv + ["--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    rows = {r["model"]: r for r in out["summary"]}
    assert rows["gigatime"]["engine_windows_ratio"] == 1.0 and rows["gigatime"]["runs"] == 2
    assert rows["gigatime-flash"]["engine_windows_per_s"] == 32.0
    assert rows["gigatime-flash"]["engine_windows_ratio"] == pytest.approx(4.0)
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "medians of 2 interleaved runs" in text and "4.00x" in text
