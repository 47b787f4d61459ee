"""ONNX export, fp16 conversion, model hashing and the ONNX Runtime engine."""

from __future__ import annotations

import copy
import logging
import os
from collections import OrderedDict

import numpy as np
import onnx
import pytest
import torch

from virtime.engines import create_engine, export_onnx, model_hash
from virtime.engines.base import cpu_threads
from virtime.engines.fp16 import convert_onnx_file_fp16, convert_to_fp16
from virtime.engines.onnx_export import ensure_onnx
from virtime.engines.onnxruntime_engine import OnnxRuntimeEngine
from virtime.errors import (
    BackendUnavailableError,
    CheckpointError,
    InputDataError,
    InvalidArgumentError,
    ModelMismatchError,
)


def test_export_is_checked_and_tagged(tiny_model, tmp_path) -> None:
    path = export_onnx(tiny_model, tmp_path / "m.onnx", window=32)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["model_sha256"] == model_hash(tiny_model)
    assert meta["window"] == "32" and meta["out_channels"] == "23"
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [3, 32, 32]
    assert sorted(os.listdir(tmp_path)) == ["m.onnx"]  # no temporary file left behind


def test_failed_export_leaves_no_file(tmp_path) -> None:
    (tmp_path / "m.onnx").write_bytes(b"previous")
    with pytest.raises(ModelMismatchError, match="logits"):
        export_onnx(torch.nn.Conv2d(3, 23, 3), tmp_path / "m.onnx", window=16)  # shrinks H, W
    assert (tmp_path / "m.onnx").read_bytes() == b"previous"
    assert sorted(os.listdir(tmp_path)) == ["m.onnx"]


def test_onnxruntime_parity_with_torch(tiny_model, batch, ref, tmp_path) -> None:
    expected = ref(tiny_model, batch)
    eng = create_engine(
        tiny_model, backend="onnxruntime", cache_dir=tmp_path, window=32, max_batch=4
    )
    assert eng.threads == cpu_threads()
    y = eng.run(batch)
    assert y.dtype == np.float32 and y.shape == expected.shape
    assert np.abs(y - expected).max() < 1e-4


def test_onnxruntime_fp16_within_band(tiny_model, batch, ref, tmp_path) -> None:
    expected = ref(tiny_model, batch)
    eng = create_engine(
        tiny_model, backend="onnxruntime", precision="fp16", cache_dir=tmp_path, window=32,
        threads=1,
    )
    assert eng.threads == 1
    y = eng.run(batch)
    err = np.abs(y - expected).max() / np.abs(expected).max()
    assert 0 < err < 5e-3  # fp16: 11 significant bits; really converted (error is not zero)


def test_onnxruntime_rejects(tiny_model, tmp_path, batch) -> None:
    path = export_onnx(tiny_model, tmp_path / "m.onnx", window=32)
    with pytest.raises(InvalidArgumentError, match="bf16"):
        OnnxRuntimeEngine(path, precision="bf16")
    with pytest.raises(InvalidArgumentError, match="32-pixel"):
        OnnxRuntimeEngine(path, window=64)
    eng = OnnxRuntimeEngine(path)
    with pytest.raises(InputDataError, match="32x32"):
        eng.run(np.zeros((1, 3, 16, 16), np.float32))
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(BackendUnavailableError, match="onnxruntime-gpu"):
            OnnxRuntimeEngine(path, device="cuda")


def test_ensure_onnx_reuses_and_repairs(tiny_model, tmp_path, caplog) -> None:
    first = ensure_onnx(tiny_model, tmp_path, window=32)
    stamp = first.stat().st_mtime_ns
    assert ensure_onnx(copy.deepcopy(tiny_model), tmp_path, window=32) == first
    assert first.stat().st_mtime_ns == stamp  # same weights: no new export
    first.write_bytes(first.read_bytes()[:200])  # truncated cache entry
    with caplog.at_level(logging.WARNING):
        again = ensure_onnx(tiny_model, tmp_path, window=32)
    assert again == first and "invalid" in caplog.text
    onnx.checker.check_model(str(again))
    with pytest.raises(CheckpointError, match="not found"):
        ensure_onnx(tmp_path / "missing.onnx", tmp_path)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(CheckpointError, match="bad.onnx"):
        ensure_onnx(bad, tmp_path)


def test_fp16_conversion_types(tiny_model, tmp_path) -> None:
    src = export_onnx(tiny_model, tmp_path / "m.onnx", window=32)
    dst = convert_onnx_file_fp16(src, tmp_path / "m16.onnx")
    m = onnx.load(str(dst))
    onnx.checker.check_model(m, full_check=True)
    floats = onnx.TensorProto.FLOAT
    assert all(t.data_type != floats for t in m.graph.initializer)
    assert m.graph.input[0].type.tensor_type.elem_type == floats  # I/O kept float32
    assert m.graph.output[0].type.tensor_type.elem_type == floats
    producer = {o: n for n in m.graph.node for o in n.output}
    resize = [n for n in m.graph.node if n.op_type == "Resize"]
    assert resize
    for node in resize:  # ONNX fixes Resize scales to float32: a Cast back must feed them
        cast = producer[node.input[2]]
        assert cast.op_type == "Cast" and cast.attribute[0].i == floats
    half_in = convert_to_fp16(onnx.load(str(src)), keep_io_float32=False)
    assert half_in.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16


def test_model_hash(tiny_model, tmp_path) -> None:
    h = model_hash(tiny_model)
    assert len(h) == 64 and h == model_hash(copy.deepcopy(tiny_model))
    state = tiny_model.state_dict()
    assert model_hash(OrderedDict(reversed(list(state.items())))) == h  # order-independent
    changed = copy.deepcopy(tiny_model)
    with torch.no_grad():
        changed.head.bias[0] += 1e-6
    assert model_hash(changed) != h
    assert model_hash(copy.deepcopy(tiny_model).to(torch.bfloat16)) != h
    f = tmp_path / "x.bin"
    f.write_bytes(b"abc")
    assert model_hash(f) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    with pytest.raises(InvalidArgumentError):
        model_hash(3)
