"""TensorRT adapter: real ahead-of-time builds with TensorRT-RTX (no GPU needed), runs on a GPU."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from virtime.engines import create_engine
from virtime.engines import tensorrt_engine as te
from virtime.engines.engine_cache import EngineCache
from virtime.engines.hashing import file_sha256
from virtime.errors import BackendUnavailableError, InvalidArgumentError

trt_rtx = pytest.importorskip("tensorrt_rtx")

W = 32


@pytest.fixture
def counted_builds(monkeypatch):
    """Count real builds by wrapping the builder function."""
    calls: list[str] = []
    real = te.build_serialized_engine

    def wrapper(onnx_path, **kw):
        calls.append(kw["precision"])
        return real(onnx_path, **kw)

    monkeypatch.setattr(te, "build_serialized_engine", wrapper)
    return calls


def _meta(engine_path):
    return json.loads(engine_path.with_suffix(".json").read_text())


def test_builds_fp32_and_fp16_and_caches(tiny_model, tmp_path, counted_builds) -> None:
    p32 = te.build_engine(
        tiny_model, cache_dir=tmp_path, precision="fp32", max_batch=4, window=W,
        flavour="tensorrt-rtx",
    )
    p16 = te.build_engine(
        tiny_model, cache_dir=tmp_path, precision="fp16", max_batch=4, window=W,
        flavour="tensorrt-rtx",
    )
    assert counted_builds == ["fp32", "fp16"]
    assert p32 != p16 and p32.stat().st_size > 1000 and p16.stat().st_size > 1000
    for path, precision in ((p32, "fp32"), (p16, "fp16")):
        meta = _meta(path)
        assert meta["key"]["precision"] == precision
        assert meta["key"]["flavour"] == "tensorrt-rtx"
        assert meta["key"]["trt_version"] == trt_rtx.__version__
        assert meta["sha256"] == file_sha256(path)
    # strongly typed: the fp16 engine was built from a converted graph kept next to the export
    assert len(list((tmp_path / "onnx").glob("*-fp16.onnx"))) == 1
    again = te.build_engine(
        tiny_model, cache_dir=tmp_path, precision="fp16", max_batch=4, window=W,
        flavour="tensorrt-rtx",
    )
    assert again == p16 and counted_builds == ["fp32", "fp16"]  # cache hit, no build


def test_corrupt_and_foreign_entries_rebuilt(tiny_model, tmp_path, counted_builds, caplog) -> None:
    kw = {"cache_dir": tmp_path, "precision": "fp32", "max_batch": 2, "window": W,
          "flavour": "tensorrt-rtx"}
    path = te.build_engine(tiny_model, **kw)
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 3])  # truncated copy
    with caplog.at_level(logging.WARNING, logger="virtime.engines.engine_cache"):
        assert te.build_engine(tiny_model, **kw) == path
    assert "corrupt or truncated" in caplog.text and len(counted_builds) == 2
    assert _meta(path)["sha256"] == file_sha256(path)
    meta = _meta(path)
    meta["key"]["trt_version"] = "0.9.0"  # an entry from another TensorRT version
    path.with_suffix(".json").write_text(json.dumps(meta))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="virtime.engines.engine_cache"):
        te.build_engine(tiny_model, **kw)
    assert "trt_version: '0.9.0'" in caplog.text and len(counted_builds) == 3


def test_ahead_of_time_targets(tiny_model, tmp_path) -> None:
    path = te.build_engine(
        tiny_model, cache_dir=tmp_path, max_batch=2, window=W, flavour="tensorrt-rtx",
        compute_capabilities=["sm89"],
    )
    assert _meta(path)["key"]["target"] == "aot:SM89"
    with pytest.raises(InvalidArgumentError, match="compute capability"):
        te.build_engine(
            tiny_model, cache_dir=tmp_path, max_batch=2, window=W, flavour="tensorrt-rtx",
            compute_capabilities=["SM1"],
        )
    with pytest.raises(InvalidArgumentError, match="bf16"):
        te.build_engine(tiny_model, cache_dir=tmp_path, precision="bf16", flavour="tensorrt-rtx")
    with pytest.raises(InvalidArgumentError, match="min_batch"):
        te.build_engine(tiny_model, cache_dir=tmp_path, max_batch=2, opt_batch=4, window=W,
                        flavour="tensorrt-rtx")


def test_flavour_resolution() -> None:
    mod, flavour = te.import_tensorrt("tensorrt-rtx")
    assert mod is trt_rtx and flavour == "tensorrt-rtx"
    with pytest.raises(InvalidArgumentError, match="flavour"):
        te.import_tensorrt("tensorrt-llm")
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(BackendUnavailableError, match="not installed"):
            te.import_tensorrt("tensorrt")
        assert te.import_tensorrt("auto")[1] == "tensorrt-rtx"


def test_running_needs_a_gpu(tiny_model, tmp_path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(BackendUnavailableError, match="GPU"):
        create_engine(tiny_model, backend="tensorrt", cache_dir=tmp_path, window=W)


# -- GPU ---------------------------------------------------------------------------------------
def _gpu_engine(model, **kw):
    """A TensorRT engine on this GPU; skips (with TensorRT's reason) where the installed flavour
    does not support the GPU (TensorRT-RTX targets RTX-class compute capabilities, e.g. not sm_90)."""
    try:
        return create_engine(model, backend="tensorrt", **kw)
    except BackendUnavailableError as exc:
        if "compute capability" in str(exc) or "failed to build" in str(exc):
            pytest.skip(f"TensorRT flavour cannot target this GPU: {exc}")
        raise


@pytest.mark.gpu
@pytest.mark.parametrize(("precision", "band"), [("fp32", 1e-3), ("fp16", 5e-3)])
def test_gpu_run_matches_torch(tiny_model, batch, ref, tmp_path, precision, band) -> None:
    import torch

    expected = ref(tiny_model, batch)
    eng = _gpu_engine(
        tiny_model, precision=precision, cache_dir=tmp_path, max_batch=4, window=W
    )
    y = eng.run(batch)
    assert y.dtype == np.float32 and y.shape == expected.shape
    assert np.abs(y - expected).max() / np.abs(expected).max() < band
    xin = torch.from_numpy(batch).cuda()
    out = torch.full((7, 23, W, W), float("nan"), device="cuda")
    stream = torch.cuda.Stream()
    eng.run_device(xin.data_ptr(), out.data_ptr(), 7, stream.cuda_stream)
    stream.synchronize()
    np.testing.assert_allclose(out.cpu().numpy(), y, atol=1e-5)
    eng.close()


@pytest.mark.gpu
def test_gpu_refused_plan_is_rebuilt(tiny_model, batch, ref, tmp_path, caplog) -> None:
    eng = _gpu_engine(tiny_model, cache_dir=tmp_path, max_batch=2, window=W)
    key = eng.key
    eng.close()
    cache = EngineCache(tmp_path)
    built_from = _meta(cache.paths(key)[0])["built_from"]
    cache.store(key, b"\0" * 4096, built_from)  # a consistent entry whose plan the runtime refuses
    with caplog.at_level(logging.WARNING):
        eng = _gpu_engine(tiny_model, cache_dir=tmp_path, max_batch=2, window=W)
    assert "another GPU or version" in caplog.text
    expected = ref(tiny_model, batch)
    assert np.abs(eng.run(batch) - expected).max() / np.abs(expected).max() < 1e-3


def test_refused_plan_rebuilt_without_gpu(tiny_model, tmp_path, monkeypatch, caplog) -> None:
    """create(): a cached plan the runtime refuses is discarded with a warning and rebuilt once.

    The GPU-side loading is replaced by a double that refuses plans starting with a zero byte
    (what a plan for another GPU looks like to it); building and caching are real.
    """
    import contextlib

    import torch

    from virtime.engines import tensorrt_engine

    loaded: list[bytes] = []

    class LoadDouble(tensorrt_engine.TensorRTEngine):
        def __init__(self, trt, plan, *, key, device_index):
            if plan[:1] == b"\0":
                raise tensorrt_engine._StalePlanError("the runtime refused the plan")
            loaded.append(plan)
            self.key = key

    monkeypatch.setattr(tensorrt_engine, "cuda_available", lambda: True)
    monkeypatch.setattr(tensorrt_engine, "_target", lambda flavour, caps: "Fake GPU|sm_89")
    monkeypatch.setattr(tensorrt_engine, "_gpu_target", lambda: None)  # build for the default set
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "device", lambda index: contextlib.nullcontext())
    kw = {"precision": "fp32", "device": "cuda:0", "cache_dir": tmp_path, "max_batch": 2,
          "window": W, "flavour": "tensorrt-rtx"}
    eng = LoadDouble.create(tiny_model, **kw)
    engine_path = EngineCache(tmp_path).paths(eng.key)[0]
    assert loaded == [engine_path.read_bytes()]
    built_from = _meta(engine_path)["built_from"]  # the weights the plan was built from
    EngineCache(tmp_path).store(eng.key, b"\0" * 512, built_from)  # consistent, unloadable
    with caplog.at_level(logging.WARNING, logger="virtime.engines.engine_cache"):
        LoadDouble.create(tiny_model, **kw)
    assert "another GPU or version" in caplog.text
    assert len(loaded) == 2 and loaded[1][:1] != b"\0"
    assert engine_path.read_bytes() == loaded[1]


def test_altered_onnx_export_does_not_change_the_plan(tiny_model, tmp_path, counted_builds,
                                                        caplog, alter_one_weight) -> None:
    """#15: a cached ONNX export with one weight changed is re-exported from the real weights,
    so the plan found for the model is the one built from them (no build from the altered graph)."""
    from virtime.engines.hashing import model_hash

    kw = {"cache_dir": tmp_path, "precision": "fp32", "max_batch": 2, "window": W,
          "flavour": "tensorrt-rtx"}
    path = te.build_engine(tiny_model, **kw)
    plan = path.read_bytes()
    (export,) = (tmp_path / "onnx").glob("*-w32-op17.onnx")
    alter_one_weight(export)
    with caplog.at_level(logging.WARNING, logger="virtime.engines.engine_cache"):
        again = te.build_engine(tiny_model, **kw)
    assert export.name in caplog.text
    assert again == path and again.read_bytes() == plan and len(counted_builds) == 1
    assert _meta(path)["built_from"]["weights_sha256"] == model_hash(tiny_model)
