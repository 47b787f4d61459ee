"""translate takes an open Slide as well as a path, and a fitted stain normalizer as normalize."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

import virtime
from virtime.slide import Slide
from virtime.stain import get_normalizer, reference_he_image


def _outputs(folder):
    return (pd.read_parquet(folder / "tiles.parquet"),
            np.asarray(__import__("zarr").open(str(folder / "mif.ome.zarr"), mode="r")["0"]))


def test_open_slide_gives_the_same_output_as_its_path(small_slide, tiny_model, fast_config,
                                                      tmp_path):
    cfg = dataclasses.replace(fast_config, features=False)
    by_path = virtime.translate(small_slide, tiny_model, tmp_path / "a", cfg)
    with_object = virtime.translate(Slide(small_slide), tiny_model, tmp_path / "b", cfg)
    assert with_object.slide_id == by_path.slide_id and not with_object.skipped
    (ta, za), (tb, zb) = _outputs(by_path.output_dir), _outputs(with_object.output_dir)
    pd.testing.assert_frame_equal(ta, tb)
    np.testing.assert_array_equal(za, zb)
    assert with_object.record["fingerprint"] == by_path.record["fingerprint"]
    # the same folder, asked again with the object, is already done
    assert virtime.translate(Slide(small_slide), tiny_model, tmp_path / "a", cfg).skipped


def test_fitted_normalizer_reaches_the_pipeline(small_slide, tiny_model, fast_config, tmp_path):
    cfg = dataclasses.replace(fast_config, features=False)
    default = virtime.translate(small_slide, tiny_model, tmp_path / "default",
                                dataclasses.replace(cfg, normalize="reinhard"))
    reference = reference_he_image(128, 128).astype(np.float32)
    reference = np.clip(reference * np.array([0.8, 0.6, 1.0]), 0, 255).astype(np.uint8)
    fitted = get_normalizer("reinhard").fit(reference)
    mine = virtime.translate(small_slide, tiny_model, tmp_path / "mine",
                             dataclasses.replace(cfg, normalize=fitted))
    (td, zd), (tm, zm) = _outputs(default.output_dir), _outputs(mine.output_dir)
    assert not np.array_equal(zd, zm)  # another reference, other tiles into the model
    assert not np.allclose(td["CD8.mean_probability"], tm["CD8.mean_probability"])
    fp_default, fp_mine = default.record["fingerprint"], mine.record["fingerprint"]
    assert fp_default["normalize"] == fp_mine["normalize"] == "reinhard"
    assert fp_default["normalize_reference"] != fp_mine["normalize_reference"]
    summary = json.loads((mine.output_dir / "summary.json").read_text())
    assert summary["config"]["normalize"] == "reinhard"
    # a rerun with the default reference does not accept the fitted one's folder
    again = virtime.translate(small_slide, tiny_model, tmp_path / "mine",
                              dataclasses.replace(cfg, normalize="reinhard"))
    assert not again.skipped


def test_not_a_normalizer_is_refused(small_slide, tiny_model, fast_config, tmp_path):
    with pytest.raises(virtime.errors.InvalidArgumentError, match="not a virtime stain"):
        virtime.translate(small_slide, tiny_model, tmp_path,
                          dataclasses.replace(fast_config, normalize=object()))


def test_translate_result_summary_is_a_table(small_slide, tiny_model, fast_config, tmp_path):
    cfg = dataclasses.replace(fast_config, features=False)
    result = virtime.translate(small_slide, tiny_model, tmp_path, cfg)
    s = result.summary
    assert list(s.columns) == ["slide_id", "status", "skipped", "tiles_done", "tiles_failed",
                               "seconds", "model_hash", "backend", "precision", "output_dir"]
    row = s.iloc[0]
    assert len(s) == 1 and row["status"] == "done" and not row["skipped"]
    assert row["tiles_done"] == result.tiles_done == result.record["tiles_done"]
    assert row["model_hash"] == tiny_model.card.sha256 and row["backend"] == "onnxruntime"
    skipped = virtime.translate(small_slide, tiny_model, tmp_path, cfg).summary.iloc[0]
    assert skipped["status"] == "skipped" and skipped["tiles_done"] == row["tiles_done"]
