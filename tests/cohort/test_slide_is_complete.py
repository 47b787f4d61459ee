"""The cohort runner skips a finished folder only when a rerun would change nothing (#15)."""

from __future__ import annotations

from dataclasses import replace

from virtime.cohort import slide_is_complete
from virtime.models.card import sha256_file
from virtime.simulate.slides import make_slide
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
    # Settings that do not change the output (threads, progress) keep it complete.
    assert slide_is_complete(out, True, small_slide, wanted, replace(fast_config, threads=1))
