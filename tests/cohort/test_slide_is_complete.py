"""The cohort runner skips a finished folder only when a rerun would change nothing (#15)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from virtime.cohort import slide_is_complete
from virtime.models.card import sha256_file
from virtime.simulate.slides import make_slide, synthetic_he
from virtime.stain import get_normalizer
from virtime.translation import translate


def test_finished_folder_of_another_slide_model_or_setting_is_not_complete(
        tmp_path, small_slide, tiny_model, tiny_weights, fast_config):
    result = translate(small_slide, tiny_model, tmp_path / "out", fast_config)
    out = result.output_dir
    wanted = sha256_file(tiny_weights)
    assert slide_is_complete(out, True, small_slide, wanted, fast_config)
    # Another slide file under the same id: not this folder's slide.
    (tmp_path / "other").mkdir()
    other = make_slide(tmp_path / "other" / small_slide.name, 768, 512, mpp=0.5, seed=99)
    assert not slide_is_complete(out, True, other, wanted, fast_config)
    # Other weights, or a setting that changes the output: to be redone by translate.
    assert not slide_is_complete(out, True, small_slide, "0" * 64, fast_config)
    assert not slide_is_complete(out, True, small_slide, wanted, replace(fast_config, overlap=16))
    assert not slide_is_complete(out, True, small_slide, wanted, replace(fast_config, cells=True))
    # Also what the old six-key check missed: the slide's mpp (a manifest mpp sets config.mpp),
    # the backend, and a normalizer fitted to another reference under the same name.
    assert not slide_is_complete(out, True, small_slide, wanted, replace(fast_config, mpp=0.45))
    assert not slide_is_complete(out, True, small_slide, wanted,
                                 replace(fast_config, backend="torch"))
    ref_rgb, _ = synthetic_he(256, 256, 0.5, rng=np.random.default_rng(7))
    normed = translate(small_slide, tiny_model, tmp_path / "norm",
                       replace(fast_config, normalize="macenko")).output_dir
    assert slide_is_complete(normed, True, small_slide, wanted,
                             replace(fast_config, normalize="macenko"))
    refit = get_normalizer("macenko").fit(ref_rgb)  # same name, another reference
    assert not slide_is_complete(normed, True, small_slide, wanted,
                                 replace(fast_config, normalize=refit))
    # Settings that do not change the output (threads, progress) keep it complete.
    assert slide_is_complete(out, True, small_slide, wanted, replace(fast_config, threads=1))


def test_stale_features_are_refreshed_by_the_cohort_not_skipped(
        tmp_path, small_slide, tiny_weights, cohort_config):
    """Other --bin-um/--threshold: the slide is not "complete"; its worker's translate() redoes
    only the features (the canvas stays), and the cohort table has the new values."""
    import json

    import pandas as pd
    from distributed import Client, LocalCluster

    from virtime.cohort import run_cohort
    from virtime.cohort.runner import CohortOptions
    from virtime.features import features_from_outputs, read_features

    manifest = tmp_path / "manifest.csv"
    pd.DataFrame([{"path": str(small_slide), "slide_id": "small", "patient_id": "P0"}]).to_csv(
        manifest, index=False)
    out = tmp_path / "out"
    folder = out / "small"
    quiet = CohortOptions(show_progress=False)
    stale = replace(cohort_config, bin_um=32.0, threshold=0.41)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        first = run_cohort(manifest, tiny_weights, out, cohort_config, options=quiet,
                           client=client)
        assert first.ledger.set_index("slide_id").loc["small", "status"] == "done"
        canvas = {str(p): p.stat().st_mtime_ns for p in (folder / "mif.ome.zarr").rglob("*")}
        wanted = sha256_file(tiny_weights)
        assert slide_is_complete(folder, True, small_slide, wanted, cohort_config)
        assert not slide_is_complete(folder, True, small_slide, wanted, stale)

        second = run_cohort(manifest, tiny_weights, out, stale, options=quiet, client=client)

    assert second.ledger.set_index("slide_id").loc["small", "status"] == "skipped"  # not redone
    assert {str(p): p.stat().st_mtime_ns for p in (folder / "mif.ome.zarr").rglob("*")} == canvas
    table, meta = read_features(folder / "features.parquet")
    settings = json.loads(meta["features.settings"])
    assert (settings["bin_um"], settings["threshold"]) == (32.0, 0.41)
    expected = features_from_outputs(folder, bin_um=32.0, threshold=0.41, write=False)
    density = [c for c in expected if c.endswith(".density")]
    assert [table.iloc[0][c] for c in density] == pytest.approx([expected[c] for c in density])
    old = features_from_outputs(folder, write=False)
    assert [old[c] for c in density] != pytest.approx([expected[c] for c in density])
    merged = pd.read_parquet(second.features_path).set_index("slide_id")
    assert [merged.loc["small", c] for c in density] == pytest.approx(
        [expected[c] for c in density])
    assert slide_is_complete(folder, True, small_slide, wanted, stale)
