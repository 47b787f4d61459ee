"""The device-tensor protocol (``run_tensor``) and the backend-by-GPU table of ``auto``."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from virtime import engines
from virtime.engines import base
from virtime.engines.selection import Capabilities, choose_backends
from virtime.errors import InputDataError

H100 = (9, 0)
L4 = (8, 9)
RTX5090 = (12, 0)


# -- the table -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("caps", "precision", "expected", "reason_has"),
    [
        (Capabilities(), "fp32", ("onnxruntime", "torch"), "CPU"),
        (Capabilities(), "bf16", ("torch",), "bf16"),
        # Hopper with TensorRT-RTX installed: RTX 1.7 has no SM90 kernels -> torch, and it says so.
        (Capabilities(H100, tensorrt_rtx=True, gpu_name="H200"), "fp16", ("torch",), "SM90"),
        (Capabilities(H100, gpu_name="H100"), "bf16", ("torch",), "bf16"),
        (Capabilities(H100), "fp32", ("torch",), "no TensorRT"),
        (Capabilities(H100, tensorrt=True), "fp16", ("tensorrt", "torch"), "full TensorRT"),
        (Capabilities(L4, tensorrt_rtx=True), "fp16", ("tensorrt", "torch"), "SM89"),
        (Capabilities(RTX5090, tensorrt_rtx=True), "fp32", ("tensorrt", "torch"), "SM120"),
        (Capabilities(L4, tensorrt_rtx=True), "bf16", ("torch",), "bf16"),
        (Capabilities(H100, onnxruntime_cuda=True), "fp16", ("torch", "onnxruntime"), "torch"),
    ],
)
def test_backend_table(caps, precision, expected, reason_has) -> None:
    choice = choose_backends(caps, precision)
    assert choice.candidates == expected
    assert reason_has in choice.reason
    assert len(choice.reasons) == len(choice.candidates)


def test_table_flavour_options_and_special_cases() -> None:
    assert dict(choose_backends(Capabilities(L4, tensorrt_rtx=True)).options) == {
        "flavour": "tensorrt-rtx"}
    assert dict(choose_backends(Capabilities(H100, tensorrt=True, tensorrt_rtx=True)).options) == {
        "flavour": "tensorrt"}
    # device="cpu" on a GPU machine, and ONNX files (torch cannot run them)
    assert choose_backends(Capabilities(H100), on_cpu=True).backend == "onnxruntime"
    assert "torch" not in choose_backends(Capabilities(H100), onnx_file=True).candidates


def test_auto_on_fake_hopper_picks_torch_and_logs_why(monkeypatch, tiny_model, caplog) -> None:
    monkeypatch.setattr(base, "_machine_capabilities",
                        lambda device: Capabilities(H100, tensorrt_rtx=True, gpu_name="H200"))
    assert engines.resolve_backend("auto", precision="fp16") == "torch"
    # create on CPU with the real (GPU-less) machine: the log line carries the table's reason
    monkeypatch.setattr(base, "_machine_capabilities", lambda device: Capabilities())
    with caplog.at_level(logging.INFO, logger="virtime.engines.base"):
        eng = engines.create_engine(tiny_model, precision="bf16", window=32)
    assert eng.name == "torch"
    assert "backend auto -> torch: ONNX Runtime has no bf16 kernels" in caplog.text


# -- run_tensor --------------------------------------------------------------------------------
@pytest.mark.parametrize("channels_last", [True, False])
def test_torch_run_tensor_equals_run(tiny_model, batch, ref, channels_last) -> None:
    eng = engines.create_engine(tiny_model, backend="torch", device="cpu", window=32,
                                max_batch=3, channels_last=channels_last)
    y = eng.run_tensor(torch.from_numpy(batch))
    assert isinstance(y, torch.Tensor) and y.dtype == torch.float32 and y.device.type == "cpu"
    np.testing.assert_array_equal(y.numpy(), eng.run(batch))  # same kernels, same chunks
    np.testing.assert_allclose(y.numpy(), ref(tiny_model, batch), atol=1e-5)
    # one chunk: handed back as is; float16 input is accepted (cast on the device)
    eng.max_batch = 32
    np.testing.assert_allclose(eng.run_tensor(torch.from_numpy(batch).half()).numpy(),
                               ref(tiny_model, batch.astype(np.float16)), atol=1e-4)


@pytest.mark.slow
def test_torch_run_tensor_bf16_and_compile(tiny_model, batch, ref) -> None:
    x = torch.from_numpy(batch)
    bf = engines.create_engine(tiny_model, backend="torch", device="cpu", window=32,
                               precision="bf16")
    assert bf.run_tensor(x).dtype == torch.float32
    assert np.abs(bf.run_tensor(x).numpy() - ref(tiny_model, batch)).max() < 0.2
    # torch.compile through the option (the eager backend keeps this test fast on CPU)
    comp = engines.create_engine(tiny_model, backend="torch", device="cpu", window=32,
                                 compile=True, compile_backend="eager")
    assert comp.compiled
    np.testing.assert_allclose(comp.run_tensor(x).numpy(), ref(tiny_model, batch), atol=1e-5)


def test_run_tensor_rejects_bad_input(tiny_model, batch) -> None:
    eng = engines.create_engine(tiny_model, backend="torch", device="cpu", window=32)
    with pytest.raises(InputDataError, match="torch.Tensor"):
        eng.run_tensor(batch)
    with pytest.raises(InputDataError, match="float"):
        eng.run_tensor(torch.zeros((1, 3, 32, 32), dtype=torch.uint8))
    assert eng.run_tensor(torch.zeros((0, 3, 32, 32))).shape[0] == 0


def test_onnxruntime_run_tensor_through_io_binding(tiny_model, batch, ref, tmp_path,
                                                   monkeypatch) -> None:
    eng = engines.create_engine(tiny_model, backend="onnxruntime", device="cpu", window=32,
                                cache_dir=tmp_path, max_batch=4)
    assert eng.out_channels == 23
    calls = []
    real = eng._run_bound
    monkeypatch.setattr(eng, "_run_bound", lambda *a: calls.append(a[2]) or real(*a))
    y = eng.run_tensor(torch.from_numpy(batch))
    assert calls == ["cpu", "cpu"]  # 7 windows in chunks of 4, both bound, no session.run
    np.testing.assert_allclose(y.numpy(), eng.run(batch), atol=1e-6)
    np.testing.assert_allclose(y.numpy(), ref(tiny_model, batch), atol=1e-4)


def test_generic_run_tensor_goes_through_run(batch) -> None:
    class Doubler(base.BaseEngine):
        name = "doubler"

        def _run_chunk(self, x):
            return np.concatenate([x, x], axis=1).astype(np.float32)

    eng = Doubler(precision="fp32", device="cpu", max_batch=2, window=None)
    y = eng.run_tensor(torch.from_numpy(batch))
    np.testing.assert_array_equal(y.numpy(), np.concatenate([batch, batch], axis=1))


# -- on a GPU ----------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_cuda_run_tensor_stays_on_device(tiny_model, batch, ref, precision) -> None:
    eng = engines.create_engine(tiny_model, backend="torch", device="cuda", window=32,
                                precision=precision)
    x = torch.from_numpy(batch).cuda()
    y = eng.run_tensor(x)
    assert y.is_cuda and y.dtype == torch.float32
    tol = 1e-3 if precision == "fp32" else 0.2
    assert np.abs(y.cpu().numpy() - ref(tiny_model, batch)).max() < tol


@pytest.mark.gpu
def test_cuda_graphs_per_shape_and_tf32_restored(tiny_model, batch, ref) -> None:
    before = (torch.backends.cudnn.conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision)
    eng = engines.create_engine(tiny_model, backend="torch", device="cuda", window=32,
                                cuda_graph=True, tf32=False, max_batch=8)
    x = torch.from_numpy(batch).cuda()
    for n in (7, 3, 7):
        np.testing.assert_allclose(eng.run_tensor(x[:n]).cpu().numpy(), ref(tiny_model, batch[:n]),
                                   atol=1e-4)
    assert sorted(k[0] for k in eng._graphs) == [3, 7]
    after = (torch.backends.cudnn.conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision)
    assert after == before


@pytest.mark.gpu
def test_tensorrt_run_tensor_uses_run_device(tiny_model, batch, ref, tmp_path, monkeypatch) -> None:
    pytest.importorskip("tensorrt_rtx")
    from virtime.engines.selection import TENSORRT_RTX_TARGETS

    if tuple(torch.cuda.get_device_capability()) not in TENSORRT_RTX_TARGETS:
        pytest.skip("TensorRT-RTX 1.7 does not target this GPU")
    eng = engines.create_engine(tiny_model, backend="tensorrt", precision="fp16", window=32,
                                cache_dir=tmp_path, max_batch=8, flavour="tensorrt-rtx")
    monkeypatch.setattr(eng, "run", None)  # the device path must not go through the host
    y = eng.run_tensor(torch.from_numpy(batch).cuda())
    assert y.is_cuda
    assert np.abs(y.cpu().numpy() - ref(tiny_model, batch)).max() < 0.05
