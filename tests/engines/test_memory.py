"""#15 defect 7a: batch sizes come from a memory budget and the model's measured activation size."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from virtime.engines.memory import (
    WindowCost,
    default_memory_budget,
    measure_window_cost,
    parse_bytes,
    plan_batches,
    tile_host_bytes,
    total_memory,
)
from virtime.errors import InvalidArgumentError

MIB = 1 << 20


def test_parse_bytes() -> None:
    assert parse_bytes("2GiB") == 2 << 30
    assert parse_bytes("512 MiB") == 512 << 20
    assert parse_bytes("1.5GB") == 1_500_000_000
    assert parse_bytes("3e9") == 3_000_000_000 and parse_bytes(4096) == 4096
    for bad in ("2XB", "", "-1GiB", "0"):
        with pytest.raises(InvalidArgumentError):
            parse_bytes(bad)


def test_default_budget_is_a_quarter_of_ram_at_most_4gib() -> None:
    assert default_memory_budget() == min(total_memory() // 4, 4 << 30)


def test_smaller_budget_smaller_batches() -> None:
    cost = WindowCost(per_window=150 * MIB, fixed=20 * MIB, window=256)
    per_tile = tile_host_bytes(512, 256, 4)
    # the estimate, computed by hand: base + fixed + wb x per_window + tb x per_tile
    assert per_tile == 5 * 3 * 512 * 512 * 4 + 4 * 3 * 256 * 256 * 4 + 4 * 23 * 256 * 256 * 4
    kw = {"tile_size": 512, "windows_per_tile": 4, "max_tile_batch": 8, "max_window_batch": 32,
          "base": 500 * MIB}
    big = plan_batches(cost, budget=64 << 30, **kw)
    assert (big.tile_batch, big.window_batch) == (8, 32) and big.fits
    two = plan_batches(cost, budget=2 << 30, **kw)
    # largest wb with 500 + 20 + 150 wb + ceil(wb/4) * per_tile <= 2048 MiB
    wb = max(w for w in range(1, 33)
             if 500 * MIB + 20 * MIB + w * 150 * MIB + -(-w // 4) * per_tile <= 2 << 30)
    assert (two.tile_batch, two.window_batch) == (-(-wb // 4), wb) and two.fits
    assert two.estimated_peak <= 2 << 30 < two.estimated_peak + cost.per_window + per_tile
    sizes = [plan_batches(cost, budget=b << 20, **kw).window_batch for b in (1000, 1500, 3000, 6000)]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]
    tiny = plan_batches(cost, budget=600 * MIB, **kw)
    assert (tiny.tile_batch, tiny.window_batch, tiny.fits) == (1, 1, False)


def test_measured_cost_covers_the_logits(tiny_model) -> None:
    from virtime.engines import create_engine

    with create_engine(tiny_model, backend="torch", device="cpu", window=64) as eng:
        cost = measure_window_cost(eng, 64)
        assert cost.per_window >= 23 * 64 * 64 * 4  # at least the float32 output of a window
        assert measure_window_cost(eng, 64) is cost  # probed once per engine


@pytest.fixture
def gigatime_tiny(tiny_weights):
    from virtime.models import load

    return load(tiny_weights)


@pytest.mark.slow
def test_pipeline_output_identical_with_budgeted_batches(gigatime_tiny, tmp_path, caplog) -> None:
    import zarr

    from virtime.engines import create_engine
    from virtime.simulate.slides import make_slide
    from virtime.translation import TranslateConfig, translate

    slide = make_slide(tmp_path / "s.svs", 384, 256, mpp=0.5, seed=5)
    config = TranslateConfig(tile_size=128, backend="torch", device="cpu", show_progress=False,
                             batch_size=4, window_batch=16, threads=2, features=False,
                             memory_budget=64 << 30)
    calls: dict[str, list[int]] = {}

    def run(name: str, cfg: TranslateConfig):
        eng = create_engine(gigatime_tiny, backend="torch", device="cpu", max_batch=16, window=64)
        real = eng._run_chunk
        sizes: list[int] = []
        eng._run_chunk = lambda x: (sizes.append(len(x)), real(x))[1]
        with eng:
            sizes.clear()
            translate(slide, gigatime_tiny, tmp_path / name, cfg, engine=eng)
        calls[name] = sizes
        return np.asarray(zarr.open_group(str(tmp_path / name / "s" / "mif.ome.zarr"), mode="r")["0"])

    default = run("default", config)
    with caplog.at_level(logging.WARNING, logger="virtime.engines.memory"):
        small = run("small", TranslateConfig(**{**config.__dict__, "memory_budget": 1 << 20}))
    assert "below what one window needs" in caplog.text
    # the probe runs batches 1, 1, 2 first; the tile loop then 16 windows a call vs 1
    assert calls["default"][:3] == calls["small"][:3] == [1, 1, 2]
    assert max(calls["default"][3:]) == 16 and max(calls["small"][3:]) == 1
    np.testing.assert_array_equal(small, default)
