"""A rerun with other slide-features settings recomputes only the features (#16).

The features settings (bin_um, threshold, max_failed_share) are not in the translation
fingerprint: they do not change the canvas. A finished folder whose features.parquet was made
with other settings (or is missing) gets new features from its stored outputs, the canvas stays.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from feature_reference import densities

import virtime
from virtime.features import features_from_outputs, read_features


def _files(folder: Path) -> dict[str, tuple[int, bytes]]:
    """Every file below ``folder``: (mtime in ns, bytes)."""
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _settings(out: Path) -> dict:
    return json.loads(read_features(out / "features.parquet")[1]["features.settings"])


def test_rerun_with_other_features_settings_recomputes_only_the_features(
        small_slide, tiny_model, fast_config, tmp_path):
    first = virtime.translate(small_slide, tiny_model, tmp_path, fast_config)
    out = first.output_dir
    before = pd.read_parquet(out / "features.parquet")
    canvas = _files(out / "mif.ome.zarr")
    tiles = _files(out)["tiles.parquet"]
    # 0.41 * 255 = 104.55: no uint8 value sits on the threshold (the reference needs no tie rule).
    cfg = dataclasses.replace(fast_config, bin_um=32.0, threshold=0.41)

    again = virtime.translate(small_slide, tiny_model, tmp_path, cfg)

    assert again.skipped and again.features_refreshed
    after = pd.read_parquet(out / "features.parquet")
    expected = features_from_outputs(out, bin_um=32.0, threshold=0.41, write=False)
    assert list(after.columns) == list(expected)
    for column, value in expected.items():
        got = after.iloc[0][column]
        if isinstance(value, float):
            assert got == pytest.approx(value, nan_ok=True, rel=1e-12, abs=1e-15), column
        else:
            assert got == value, column
    # Independently of features_from_outputs: densities counted on the stored map.
    for column, value in densities(out, 0.41).items():  # the background channels too
        assert after.iloc[0][column] == pytest.approx(value, rel=1e-9, abs=1e-12), column
    assert densities(out, 0.41) != densities(out, 0.5)  # the planted change is visible
    changed = [c for c in after.columns if c.endswith(".density")
               and after.iloc[0][c] != before.iloc[0][c]]
    assert changed, "features did not change with the threshold"
    entropy = [c for c in after.columns if c.endswith(".entropy")]
    assert not np.allclose(after[entropy].to_numpy(float), before[entropy].to_numpy(float),
                           equal_nan=True)  # bin_um changes the spatial entropy
    # Nothing of the translation was redone.
    assert _files(out / "mif.ome.zarr") == canvas
    assert _files(out)["tiles.parquet"] == tiles
    settings = _settings(out)
    assert (settings["bin_um"], settings["threshold"], settings["max_failed_share"]) == (
        32.0, 0.41, 0.05)
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["config"]["bin_um"], summary["config"]["threshold"]) == (32.0, 0.41)
    assert summary["fingerprint"] == first.record["fingerprint"]
    assert again.record["config"]["threshold"] == 0.41
    assert (summary["tiles_done"], summary["seconds"]) == (first.tiles_done,
                                                           first.record["seconds"])

    # The same settings again: nothing at all changes.
    folder = _files(out)
    third = virtime.translate(small_slide, tiny_model, tmp_path, cfg)
    assert third.skipped and not third.features_refreshed
    assert _files(out) == folder


def test_features_turned_on_for_a_finished_folder(small_slide, tiny_model, fast_config, tmp_path):
    first = virtime.translate(small_slide, tiny_model, tmp_path,
                              dataclasses.replace(fast_config, features=False))
    out = first.output_dir
    assert not (out / "features.parquet").exists()
    canvas = _files(out / "mif.ome.zarr")

    again = virtime.translate(small_slide, tiny_model, tmp_path,
                              dataclasses.replace(fast_config, max_failed_share=0.2))

    assert again.skipped
    assert _files(out / "mif.ome.zarr") == canvas
    table = pd.read_parquet(out / "features.parquet")
    for column, value in densities(out, 0.5).items():
        if column in table.columns:  # the protein channels
            assert table.iloc[0][column] == pytest.approx(value, rel=1e-9, abs=1e-12), column
    assert _settings(out)["max_failed_share"] == 0.2
    config = json.loads((out / "summary.json").read_text())["config"]
    assert (config["features"], config["max_failed_share"]) == (True, 0.2)


def test_features_rewritten_elsewhere_are_refreshed_by_a_rerun(small_slide, tiny_model,
                                                              fast_config, tmp_path):
    """features.parquet's metadata, not summary.json, says what it was made with."""
    out = virtime.translate(small_slide, tiny_model, tmp_path, fast_config).output_dir
    features_from_outputs(out, bin_um=16.0)  # as `virtime features --bin-um 16` would
    assert _settings(out)["bin_um"] == 16.0
    assert json.loads((out / "summary.json").read_text())["config"]["bin_um"] == 64.0

    assert virtime.translate(small_slide, tiny_model, tmp_path, fast_config).skipped

    assert _settings(out)["bin_um"] == 64.0
    expected = features_from_outputs(out, write=False)
    table = pd.read_parquet(out / "features.parquet")
    entropy = [c for c in expected if c.endswith(".entropy")]
    np.testing.assert_allclose(table.iloc[0][entropy].to_numpy(float),
                               np.array([expected[c] for c in entropy], float), equal_nan=True)
