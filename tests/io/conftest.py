"""The translation fixtures (small slide, fast configuration) for the I/O tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def small_slide(tmp_path_factory):
    from virtime.simulate.slides import make_slide

    return make_slide(tmp_path_factory.mktemp("ioslides") / "small.svs", 768, 512, mpp=0.5, seed=11)


@pytest.fixture
def fast_config():
    from virtime.translation import TranslateConfig

    return TranslateConfig(tile_size=128, output_mpp=2.0, backend="onnxruntime", show_progress=False,
                           batch_size=4, window_batch=16, threads=2, min_tissue=0.1)
