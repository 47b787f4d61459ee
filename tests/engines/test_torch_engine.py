"""Torch engine against a plain fp32 ``model(x)``: CPU paths here, CUDA paths on the GPU machine."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from virtime.engines import create_engine
from virtime.engines.torch_engine import TorchEngine
from virtime.errors import (
    BackendUnavailableError,
    InvalidArgumentError,
    ModelMismatchError,
)


def _band(y: np.ndarray, ref: np.ndarray) -> float:
    """Largest error relative to the logits' range (a precision band independent of scale)."""
    return float(np.abs(y - ref).max() / np.abs(ref).max())


def test_cpu_fp32_matches_model(tiny_model, batch, ref) -> None:
    expected = ref(tiny_model, batch)
    eng = create_engine(tiny_model, backend="torch", device="cpu", max_batch=3, window=32)
    y = eng.run(batch)
    assert y.dtype == np.float32 and y.shape == (7, 23, 32, 32) and y.flags.c_contiguous
    np.testing.assert_allclose(y, expected, rtol=0, atol=1e-5)


def test_cpu_channels_last_matches(tiny_model, batch, ref) -> None:
    expected = ref(tiny_model, batch)
    eng = TorchEngine(tiny_model, device="cpu", channels_last=True, max_batch=4)
    y = eng.run(batch)
    assert y.flags.c_contiguous  # NHWC internally, NCHW handed back
    np.testing.assert_allclose(y, expected, rtol=0, atol=1e-5)


def test_cpu_bf16_within_band(tiny_model, batch, ref) -> None:
    expected = ref(tiny_model, batch)
    y = TorchEngine(tiny_model, device="cpu", precision="bf16").run(batch)
    assert y.dtype == np.float32
    # bf16 keeps 8 significant bits (~0.4%); a few layers accumulate a few times that.
    assert _band(y, expected) < 0.03
    assert _band(y, expected) > 0  # really ran in reduced precision


def test_float16_input_accepted(tiny_model, batch, ref) -> None:
    half = batch.astype(np.float16)
    expected = ref(tiny_model, half.astype(np.float32))
    y = TorchEngine(tiny_model, device="cpu").run(half)
    np.testing.assert_allclose(y, expected, rtol=0, atol=1e-5)


def test_caller_model_untouched(tiny_model, batch) -> None:
    tiny_model.train()
    TorchEngine(tiny_model, device="cpu", precision="bf16", channels_last=True).run(batch)
    assert tiny_model.training
    assert all(p.dtype == torch.float32 for p in tiny_model.parameters())
    assert all(p.requires_grad for p in tiny_model.parameters())
    assert tiny_model.enc[0].weight.is_contiguous()


def test_any_window_size(tiny_model, rng, ref) -> None:
    x = rng.standard_normal((2, 3, 48, 64)).astype(np.float32)
    y = TorchEngine(tiny_model, device="cpu", window=32).run(x)
    np.testing.assert_allclose(y, ref(tiny_model, x), atol=1e-5)


def test_bad_requests(tiny_model, tmp_path) -> None:
    with pytest.raises(InvalidArgumentError, match="torch.nn.Module"):
        TorchEngine(tmp_path / "model.onnx")
    with pytest.raises(InvalidArgumentError, match="not a torch device"):
        TorchEngine(tiny_model, device="gpu0")
    with pytest.raises(InvalidArgumentError, match="cuda_graph"):
        TorchEngine(tiny_model, device="cpu", cuda_graph=True)
    with pytest.raises(InvalidArgumentError, match="run_device"):
        TorchEngine(tiny_model, device="cpu").run_device(0, 0, 1)
    if not torch.cuda.is_available():
        with pytest.raises(BackendUnavailableError, match="CUDA"):
            TorchEngine(tiny_model, device="cuda")


def test_wrong_model_output(batch) -> None:
    class TupleOut(torch.nn.Module):
        def forward(self, x):
            return (x,)

    with pytest.raises(ModelMismatchError, match=r"\(N, C, H, W\)"):
        TorchEngine(TupleOut(), device="cpu").run(batch)


# -- GPU ---------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize(
    ("precision", "channels_last", "cuda_graph", "band"),
    [
        ("fp32", False, False, 1e-3),  # TF32 may be on for convolutions
        ("fp32", True, True, 1e-3),
        ("fp16", True, False, 5e-3),
        ("fp16", True, True, 5e-3),
        ("bf16", True, False, 3e-2),
    ],
)
def test_cuda_matches_cpu(tiny_model, batch, ref, precision, channels_last, cuda_graph, band):
    expected = ref(tiny_model, batch)
    eng = TorchEngine(
        tiny_model, device="cuda", precision=precision, channels_last=channels_last,
        cuda_graph=cuda_graph, max_batch=4, window=32,
    )
    y = eng.run(batch)  # 7 = 4 + 3: the last chunk is padded into the captured graph
    assert y.dtype == np.float32 and y.shape == expected.shape
    assert _band(y, expected) < band
    y2 = eng.run(batch[:2])  # replay again with another batch size
    assert _band(y2, expected[:2]) < band


@pytest.mark.gpu
@pytest.mark.parametrize("input_dtype", [np.float32, np.float16])
def test_cuda_run_device_raw_pointers(tiny_model, batch, ref, input_dtype):
    expected = ref(tiny_model, batch.astype(input_dtype).astype(np.float32))
    eng = TorchEngine(
        tiny_model, device="cuda", precision="fp16", max_batch=3, window=32,
        input_dtype=input_dtype,
    )
    tdtype = torch.float16 if input_dtype == np.float16 else torch.float32
    xin = torch.from_numpy(batch).to("cuda", tdtype)
    out = torch.full((7, 23, 32, 32), float("nan"), device="cuda")
    stream = torch.cuda.Stream()
    eng.run_device(xin.data_ptr(), out.data_ptr(), 7, stream.cuda_stream)
    stream.synchronize()
    assert _band(out.cpu().numpy(), expected) < 5e-3
    out2 = torch.zeros_like(out)
    eng.run_device(xin, out2, 7)  # torch tensors work too
    torch.cuda.synchronize()
    np.testing.assert_allclose(out2.cpu().numpy(), out.cpu().numpy(), atol=1e-6)
