"""The TensorRT engine cache with a fake builder: keys, hits, and rebuilds of bad entries."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging

import pytest

from virtime.engines.engine_cache import EngineCache, EngineKey

KEY = EngineKey(
    model_hash="ab" * 32, flavour="tensorrt-rtx", trt_version="1.7.1.116", precision="fp16",
    min_batch=1, opt_batch=8, max_batch=8, window=256, target="NVIDIA L4|sm_89",
)


class FakeBuilder:
    """Counts builds and returns distinct bytes each time."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> bytes:
        self.calls += 1
        return hashlib.sha256(f"plan {self.calls}".encode()).digest() * 100


def test_every_field_changes_the_key() -> None:
    changes = {
        "model_hash": "cd" * 32, "flavour": "tensorrt", "trt_version": "10.13.0",
        "precision": "fp32", "min_batch": 2, "opt_batch": 4, "max_batch": 16, "window": 512,
        "target": "NVIDIA H100|sm_90", "input_dtype": "float16",
    }
    assert set(changes) == {f.name for f in dataclasses.fields(EngineKey)}
    stems = {KEY.stem} | {dataclasses.replace(KEY, **{k: v}).stem for k, v in changes.items()}
    assert len(stems) == len(changes) + 1


def test_miss_then_hit(tmp_path) -> None:
    cache, build = EngineCache(tmp_path), FakeBuilder()
    plan, cached = cache.get_or_build(KEY, build)
    assert not cached and build.calls == 1
    again, cached = cache.get_or_build(KEY, build)
    assert cached and again == plan and build.calls == 1
    engine_path, meta_path = cache.paths(KEY)
    meta = json.loads(meta_path.read_text())
    assert meta["key"] == KEY.as_dict() and meta["size"] == len(plan)
    assert meta["sha256"] == hashlib.sha256(engine_path.read_bytes()).hexdigest()
    assert sorted(p.name for p in cache.root.iterdir()) == sorted([engine_path.name, meta_path.name])


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete_plan", "bad_json", "foreign_key"])
def test_bad_entry_is_rebuilt_with_warning(tmp_path, caplog, damage) -> None:
    cache, build = EngineCache(tmp_path), FakeBuilder()
    plan, _ = cache.get_or_build(KEY, build)
    engine_path, meta_path = cache.paths(KEY)
    if damage == "truncate":
        engine_path.write_bytes(plan[: len(plan) // 2])
    elif damage == "flip":
        engine_path.write_bytes(bytes([plan[0] ^ 1]) + plan[1:])
    elif damage == "delete_plan":
        engine_path.unlink()
    elif damage == "bad_json":
        meta_path.write_text("{not json")
    else:  # an entry built elsewhere, copied under this name
        meta = json.loads(meta_path.read_text())
        meta["key"]["target"] = "NVIDIA A100|sm_80"
        meta_path.write_text(json.dumps(meta))
    with caplog.at_level(logging.WARNING, logger="virtime.engines.engine_cache"):
        new, cached = cache.get_or_build(KEY, build)
    assert not cached and build.calls == 2 and new != plan
    assert "discarding cached TensorRT engine" in caplog.text
    if damage == "foreign_key":
        assert "sm_80" in caplog.text
    assert cache.load(KEY) == new  # the rebuilt entry verifies


def test_other_gpu_entry_is_reported(tmp_path, caplog) -> None:
    cache, build = EngineCache(tmp_path), FakeBuilder()
    cache.get_or_build(dataclasses.replace(KEY, target="NVIDIA A100|sm_80"), build)
    cache.get_or_build(dataclasses.replace(KEY, precision="fp32"), build)  # different profile
    with caplog.at_level(logging.WARNING, logger="virtime.engines.engine_cache"):
        cache.get_or_build(KEY, build)
    assert build.calls == 3
    assert caplog.text.count("was built for") == 1 and "NVIDIA A100|sm_80" in caplog.text


# -- #15 defect 3: derived files in the cache are verified, not trusted ---------------------------
def test_altered_cached_onnx_is_rebuilt(tiny_model, batch, ref, tmp_path, caplog,
                                        alter_one_weight) -> None:
    import numpy as np

    from virtime.engines import create_engine

    expected = ref(tiny_model, batch)
    with create_engine(tiny_model, backend="onnxruntime", cache_dir=tmp_path, window=32) as eng:
        np.testing.assert_allclose(eng.run(batch), expected, rtol=1e-4, atol=1e-4)
        cached = eng.onnx_path
    alter_one_weight(cached)
    with caplog.at_level(logging.WARNING, logger="virtime.engines.engine_cache"):
        eng = create_engine(tiny_model, backend="onnxruntime", cache_dir=tmp_path, window=32)
    with eng:
        np.testing.assert_allclose(eng.run(batch), expected, rtol=1e-4, atol=1e-4)
    assert cached.name in caplog.text and "sha256" in caplog.text


def test_truncated_fp16_entry_is_rebuilt(tiny_model, batch, ref, tmp_path, caplog) -> None:
    import numpy as np

    from virtime.engines import create_engine

    kw = {"backend": "onnxruntime", "precision": "fp16", "cache_dir": tmp_path, "window": 32}
    with create_engine(tiny_model, **kw) as eng:
        first = eng.run(batch)
        entry = eng.onnx_path
    assert entry.name.endswith("-fp16.onnx")
    entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 2])
    with caplog.at_level(logging.WARNING, logger="virtime.engines.engine_cache"):
        eng = create_engine(tiny_model, **kw)
    with eng:
        again = eng.run(batch)
    np.testing.assert_array_equal(again, first)  # the same conversion, rebuilt
    expected = ref(tiny_model, batch)
    assert np.abs(again - expected).max() / np.abs(expected).max() < 2e-2
    assert entry.name in caplog.text and "truncated" in caplog.text


def test_plan_from_other_weights_is_rebuilt(tmp_path, caplog) -> None:
    cache, build = EngineCache(tmp_path), FakeBuilder()
    plan, _ = cache.get_or_build(KEY, build, {"weights_sha256": "11" * 32})
    assert cache.load(KEY, {"weights_sha256": "11" * 32}) == plan
    with caplog.at_level(logging.WARNING, logger="virtime.engines.engine_cache"):
        new, cached = cache.get_or_build(KEY, build, {"weights_sha256": "22" * 32})
    assert not cached and build.calls == 2 and "other weights" in caplog.text
    assert json.loads(cache.paths(KEY)[1].read_text())["built_from"] == {"weights_sha256": "22" * 32}
