"""--bin-um / --threshold / --max-failed-share reach the slide features of translate, cohort and
features (one definition, cli/_common.py); a translate rerun with other values refreshes them."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pandas as pd
import pytest
from feature_reference import densities

from virtime.cli import main
from virtime.features import features_from_outputs, read_features

FAST = ["--tile-size", "128", "--backend", "onnxruntime", "--batch-size", "4", "--threads", "1",
        "-q"]


def _settings(folder) -> dict:
    return json.loads(read_features(folder / "features.parquet")[1]["features.settings"])


def _same_features(folder, **settings) -> None:
    """features.parquet equals what features_from_outputs computes with ``settings``."""
    table = pd.read_parquet(folder / "features.parquet")
    expected = features_from_outputs(folder, write=False, **settings)
    numeric = [c for c, v in expected.items() if isinstance(v, float)]
    np.testing.assert_allclose(table.iloc[0][numeric].to_numpy(float),
                               np.array([expected[c] for c in numeric], float), equal_nan=True)


def test_translate_flags_reach_the_features_and_a_rerun_refreshes_them(
        small_slide, tiny_weights, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["translate", str(small_slide), "-o", str(out), "--weights", str(tiny_weights), *FAST]
    assert main([*args, "--bin-um", "32", "--threshold", "0.4", "--max-failed-share", "0.3"]) == 0
    folder = out / "small"
    settings = _settings(folder)
    assert (settings["bin_um"], settings["threshold"], settings["max_failed_share"]) == (
        32.0, 0.4, 0.3)
    config = json.loads((folder / "summary.json").read_text())["config"]
    assert (config["bin_um"], config["threshold"], config["max_failed_share"]) == (32.0, 0.4, 0.3)
    _same_features(folder, bin_um=32.0, threshold=0.4, max_failed_share=0.3)
    table = pd.read_parquet(folder / "features.parquet").iloc[0]
    at_04, at_05 = densities(folder, 0.4), densities(folder, 0.5)  # numpy, from the stored map
    shown = [k for k in at_04 if k in table.index]  # every channel, TRITC and Cy5 included
    assert len(shown) == 23 and all(table[k] == pytest.approx(at_04[k]) for k in shown)
    assert at_04 != at_05  # the flag changed values, not only the recorded settings
    zarr_files = {p: p.stat().st_mtime_ns for p in (folder / "mif.ome.zarr").rglob("*")}

    # `virtime features` still takes --bin-um (and the others) and rewrites the table.
    capsys.readouterr()
    assert main(["features", str(folder), "--bin-um", "16", "-q"]) == 0
    settings = _settings(folder)
    assert (settings["bin_um"], settings["threshold"], settings["max_failed_share"]) == (
        16.0, 0.5, 0.05)
    _same_features(folder, bin_um=16.0)

    # A translate rerun with the defaults: the canvas is current, only the features are redone.
    assert main(args) == 0
    assert "features recomputed with the new settings" in capsys.readouterr().out
    settings = _settings(folder)
    assert (settings["bin_um"], settings["threshold"], settings["max_failed_share"]) == (
        64.0, 0.5, 0.05)
    _same_features(folder)
    assert {p: p.stat().st_mtime_ns for p in (folder / "mif.ome.zarr").rglob("*")} == zarr_files


def test_bad_features_values_are_one_line_errors(tmp_path, capsys):
    assert main(["features", str(tmp_path), "--bin-um", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bin_um must be positive" in err[0]
    assert main(["features", str(tmp_path), "--threshold", "1.5"]) == 2
    assert "threshold must be in [0, 1]" in capsys.readouterr().err


def test_cohort_run_takes_the_flags_into_its_config() -> None:
    from virtime.cli import build_parser
    from virtime.cli.translate import translate_config_from_args

    args = build_parser().parse_args(["cohort", "run", "m.csv", "-o", "out", "--bin-um", "24",
                                      "--threshold", "0.3", "--max-failed-share", "0.1"])
    config = translate_config_from_args(args)
    assert (config.slide_features.bin_um, config.slide_features.threshold,
            config.slide_features.max_failed_share) == (24.0, 0.3, 0.1)


def test_defaults_are_the_features_configs() -> None:
    from virtime.cli._common import add_features_args, features_config_from_args
    from virtime.features.config import FeaturesConfig

    p = argparse.ArgumentParser()
    add_features_args(p)
    assert features_config_from_args(p.parse_args([])) == FeaturesConfig()


@pytest.mark.parametrize("command", ["translate", "features"])
def test_help_lists_the_features_flags(command, capsys) -> None:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = capsys.readouterr().out
    assert all(flag in text for flag in ("--bin-um", "--threshold", "--max-failed-share"))
