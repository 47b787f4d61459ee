"""Translate's outputs are byte-identical to those of the code before the translation/ rebuild.

``golden_outputs.json`` holds the digests (``tests/golden_digest.py``) of one synthetic slide
translated by commit d644aee, on the host path and on the device path with CPU tensors, with
overlapping tiles and virtual cells: every pyramid level, tiles/features/cells tables with their
metadata, the tissue mask, the thumbnail, the slide page and the run record (timings and paths
masked). A refactor that changes any stored byte fails here, naming the parts that changed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from golden_digest import output_digest

GOLDEN = Path(__file__).with_name("golden_outputs.json")


@pytest.fixture(scope="module")
def golden_slide(tmp_path_factory):
    from virtime.simulate.slides import write_slide
    from virtime.simulate.tissue import render_tissue

    root = tmp_path_factory.mktemp("golden")
    rgb, _, _ = render_tissue((384, 640), mpp=0.5, rng=np.random.default_rng(3))
    return root, write_slide(root / "golden.svs", rgb, 0.5)


@pytest.mark.slow
@pytest.mark.parametrize("path", ["host", "device"])
def test_outputs_equal_the_recorded_golden_digests(golden_slide, path):
    from virtime.models import load_demo
    from virtime.translation import TranslateConfig, translate

    root, slide = golden_slide
    config = TranslateConfig(tile_size=256, overlap=32, show_progress=False, backend="torch",
                             device="cpu", threads=2, cells=True, device_path=(path == "device"))
    result = translate(slide, load_demo(), root / path, config)
    expected = json.loads(GOLDEN.read_text())[path]
    got = output_digest(result.output_dir, root)
    changed = sorted(k for k in expected.keys() | got.keys() if expected.get(k) != got.get(k))
    assert not changed, f"{len(changed)} stored parts differ from the golden run: {changed[:20]}"
