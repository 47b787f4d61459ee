"""Protocol, registry, auto choice, input checks and out-of-memory back-off."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from virtime import engines
from virtime.engines import base
from virtime.errors import BackendUnavailableError, CudaError, InputDataError, InvalidArgumentError

PYTHON_DIR = Path(__file__).resolve().parents[2] / "python"


def test_import_is_lazy() -> None:
    code = (
        "import sys, virtime, virtime.engines\n"
        "heavy = [m for m in ('torch', 'onnx', 'onnxruntime', 'tensorrt', 'tensorrt_rtx')"
        " if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    env = {"PYTHONPATH": str(PYTHON_DIR), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


def test_auto_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base, "cuda_available", lambda: False)
    assert engines.resolve_backend("auto") == "onnxruntime"
    assert engines.resolve_backend("auto", precision="bf16") == "torch"
    from virtime.engines.selection import Capabilities

    def machine(**caps):
        fake = Capabilities(cuda_capability=(8, 0), **caps)
        return lambda device: Capabilities() if (device or "").startswith("cpu") else fake

    monkeypatch.setattr(base, "_machine_capabilities", machine(tensorrt=True))
    assert engines.resolve_backend("auto") == "tensorrt"
    assert engines.resolve_backend("auto", device="cpu") == "onnxruntime"
    monkeypatch.setattr(base, "_machine_capabilities", machine())
    assert engines.resolve_backend("auto") == "torch"
    assert engines.resolve_backend("onnxruntime") == "onnxruntime"
    with pytest.raises(InvalidArgumentError, match="unknown backend"):
        engines.resolve_backend("tflite")


def test_registry_names_match_cli_choices() -> None:
    assert set(engines.BACKENDS) == {"auto", *engines.registered_backends()}


def test_auto_falls_back_with_warning(
    monkeypatch: pytest.MonkeyPatch, tiny_model, batch, ref, caplog, tmp_path
) -> None:
    class Broken:
        OPTIONS = frozenset()

        @classmethod
        def create(cls, *a, **k):
            raise BackendUnavailableError("no such library")

    real = base._backend_class
    monkeypatch.setattr(base, "_auto_candidates", lambda device, precision: ["broken", "torch"])
    monkeypatch.setattr(base, "_backend_class", lambda n: Broken if n == "broken" else real(n))
    with caplog.at_level(logging.WARNING, logger="virtime.engines.base"):
        eng = engines.create_engine(tiny_model, cache_dir=tmp_path, window=32, channels_last=True)
    assert eng.name == "torch" and eng.channels_last
    assert "broken unavailable" in caplog.text
    np.testing.assert_allclose(eng.run(batch), ref(tiny_model, batch), atol=1e-5)


def test_auto_with_onnx_file_never_picks_torch(
    monkeypatch: pytest.MonkeyPatch, tiny_model, batch, ref, tmp_path
) -> None:
    path = engines.export_onnx(tiny_model, tmp_path / "m.onnx", window=32)
    monkeypatch.setattr(base, "_auto_candidates", lambda device, precision: ["torch"])
    eng = engines.create_engine(path, window=32, cache_dir=tmp_path)
    assert eng.name == "onnxruntime"
    assert np.abs(eng.run(batch) - ref(tiny_model, batch)).max() < 1e-4


def test_bad_arguments(tiny_model, tmp_path) -> None:
    with pytest.raises(InvalidArgumentError, match="precision"):
        engines.create_engine(tiny_model, backend="torch", precision="int8")
    with pytest.raises(InvalidArgumentError, match="unknown option"):
        engines.create_engine(tiny_model, backend="torch", threads=2)
    with pytest.raises(InvalidArgumentError, match="max_batch"):
        engines.create_engine(tiny_model, backend="torch", max_batch=0)


def test_engines_satisfy_protocol(tiny_model, tmp_path) -> None:
    for name in ("torch", "onnxruntime"):
        eng = engines.create_engine(tiny_model, backend=name, cache_dir=tmp_path, window=32)
        assert isinstance(eng, engines.Engine)
        eng.close()


def test_input_checks(tiny_model) -> None:
    eng = engines.create_engine(tiny_model, backend="torch", window=32)
    with pytest.raises(InputDataError, match=r"\(N, 3, H, W\)"):
        eng.run(np.zeros((2, 4, 32, 32), np.float32))
    with pytest.raises(InputDataError, match="float32 or float16"):
        eng.run(np.zeros((2, 3, 32, 32), np.float64))
    with pytest.raises(InputDataError, match="numpy"):
        eng.run([[0.0]])  # type: ignore[arg-type]
    empty = eng.run(np.zeros((0, 3, 32, 32), np.float32))
    assert empty.shape[0] == 0 and empty.dtype == np.float32


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"), True),
        (MemoryError(), True),
        (RuntimeError("[ONNXRuntimeError] : 6 : Failed to allocate memory for requested buffer"), True),
        (RuntimeError("cudaErrorMemoryAllocation"), True),
        (RuntimeError("shape mismatch"), False),
        (ValueError("bad value"), False),
    ],
)
def test_is_out_of_memory(exc: BaseException, expected: bool) -> None:
    assert engines.is_out_of_memory(exc) is expected


class _OomAbove(engines.BaseEngine):
    """Test double: doubles its input, and 'runs out of memory' for chunks above ``limit``."""

    name = "oom-stub"

    def __init__(self, limit: int, max_batch: int, error: type[BaseException]) -> None:
        super().__init__(precision="fp32", device="cuda:0", max_batch=max_batch, window=None)
        self.limit, self.error, self.sizes = limit, error, []

    def _run_chunk(self, x: np.ndarray) -> np.ndarray:
        self.sizes.append(x.shape[0])
        if x.shape[0] > self.limit:
            raise self.error("CUDA out of memory. Tried to allocate 1.00 GiB")
        return np.concatenate([x, x], axis=1).astype(np.float32) * 2.0


def test_oom_halves_batch_and_goes_on(rng, caplog) -> None:
    x = rng.standard_normal((21, 3, 4, 4)).astype(np.float32)
    eng = _OomAbove(limit=5, max_batch=16, error=torch.cuda.OutOfMemoryError)
    with caplog.at_level(logging.WARNING, logger="virtime.engines.base"):
        y = eng.run(x)
    np.testing.assert_array_equal(y, np.concatenate([x, x], axis=1) * 2.0)
    assert eng.max_batch == 4  # 16 -> 8 -> 4, then kept
    assert eng.sizes[:3] == [16, 8, 4] and set(eng.sizes[3:]) <= {4, 1}
    assert caplog.text.count("halving the batch") == 2
    eng.sizes.clear()
    eng.run(x[:9])
    assert eng.sizes == [4, 4, 1]  # the smaller batch is remembered


def test_oom_at_batch_one_raises() -> None:
    eng = _OomAbove(limit=0, max_batch=2, error=torch.cuda.OutOfMemoryError)
    with pytest.raises(CudaError, match="batch of 1"):
        eng.run(np.zeros((3, 3, 2, 2), np.float32))


def test_other_errors_propagate() -> None:
    class Failing(engines.BaseEngine):
        def _run_chunk(self, x):
            raise ZeroDivisionError("boom")

    eng = Failing(precision="fp32", device="cpu", max_batch=4, window=None)
    with pytest.raises(ZeroDivisionError):
        eng.run(np.zeros((5, 3, 2, 2), np.float32))
    assert eng.max_batch == 4


def test_default_cache_dir(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("VIRTIME_CACHE_DIR", str(tmp_path / "c"))
    assert engines.default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("VIRTIME_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert engines.default_cache_dir() == tmp_path / "x" / "virtime"
