"""ONNX Runtime engine: the CPU default, and CUDA when ``onnxruntime-gpu`` is installed.

A torch module is exported once to the cache (keyed by its weights) and loaded from there; an
``.onnx`` path is used directly. fp16 runs the graph converted by :mod:`virtime.engines.fp16`
(ONNX Runtime has fp16 kernels on CPU and CUDA); bf16 is not offered.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from virtime.engines.base import (
    BaseEngine,
    EngineRequest,
    cpu_threads,
    default_cache_dir,
    is_out_of_memory,
)
from virtime.errors import BackendUnavailableError, InvalidArgumentError

__all__ = ["OnnxRuntimeEngine"]

logger = logging.getLogger(__name__)


class OnnxRuntimeEngine(BaseEngine):
    """Run an ONNX graph with ONNX Runtime.

    Parameters
    ----------
    onnx_path
        Path of the (fp32) ONNX model, e.g. from :func:`virtime.engines.export_onnx`.
    precision
        ``"fp32"`` or ``"fp16"``.
    device
        ``"cpu"`` (default) or ``"cuda[:i]"`` (needs the CUDA execution provider).
    threads
        Intra-op threads; default all cores this process may use. Inter-op is 1 (a single chain).
    cache_dir
        Where the fp16 conversion is kept.
    """

    name: ClassVar[str] = "onnxruntime"
    OPTIONS: ClassVar[frozenset[str]] = frozenset({"threads", "opset"})

    def __init__(
        self,
        onnx_path: str | os.PathLike[str],
        *,
        precision: str = "fp32",
        device: str | None = None,
        max_batch: int = 32,
        window: int | None = None,
        threads: int | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendUnavailableError(f"onnxruntime is not installed: {exc}") from exc
        import onnx

        device = device or "cpu"
        if precision == "bf16":
            raise InvalidArgumentError("the onnxruntime backend supports fp32 and fp16, not bf16")
        if device.startswith("cuda"):
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise BackendUnavailableError(
                    "ONNX Runtime has no CUDA execution provider here (install onnxruntime-gpu)"
                )
            index = int(device.partition(":")[2] or 0)
            providers: list[Any] = [("CUDAExecutionProvider", {"device_id": index})]
            device = f"cuda:{index}"
        elif device == "cpu":
            providers = ["CPUExecutionProvider"]
        else:
            raise InvalidArgumentError(f"onnxruntime device must be cpu or cuda[:i], got {device!r}")

        path = Path(onnx_path)
        proto_inputs = onnx.load(str(path), load_external_data=False).graph.input
        dims = proto_inputs[0].type.tensor_type.shape.dim
        fixed = [d.dim_value for d in dims[2:]] if len(dims) == 4 else []
        model_window = fixed[0] if len(fixed) == 2 and fixed[0] == fixed[1] and fixed[0] > 0 else None
        if window is not None and model_window is not None and window != model_window:
            raise InvalidArgumentError(
                f"{path}: the ONNX graph takes {model_window}-pixel windows, not {window}"
            )
        super().__init__(
            precision=precision, device=device, max_batch=max_batch,
            window=model_window or window, fixed_window=model_window is not None,
        )
        if precision == "fp16":
            from virtime.engines.fp16 import cached_fp16_onnx

            path = cached_fp16_onnx(path, cache_dir if cache_dir is not None else default_cache_dir())

        opts = ort.SessionOptions()
        self.threads = int(threads) if threads else cpu_threads()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        # No CPU arena: it grows by powers of two and keeps its peak for the session's life (12 GiB
        # for the official GigaTIME at 32 windows a call); without it each call's memory (one
        # block, planned by the memory pattern) is returned when the call ends. Same speed
        # measured (benchmarks/RESULTS.md, "memory budget").
        opts.enable_cpu_mem_arena = False
        opts.enable_mem_pattern = True
        self.onnx_path = path
        self._session = ort.InferenceSession(str(path), opts, providers=providers)
        inp = self._session.get_inputs()[0]
        self._input_name = inp.name
        self._output_name = self._session.get_outputs()[0].name
        self.input_dtype = np.dtype(np.float16 if inp.type == "tensor(float16)" else np.float32)
        out_shape = self._session.get_outputs()[0].shape
        if len(out_shape) == 4 and isinstance(out_shape[1], int):
            self.out_channels = out_shape[1]

    @classmethod
    def _from_request(
        cls, model_or_onnx: Any, request: EngineRequest, *, threads: int | None = None,
        opset: int = 17,
    ) -> OnnxRuntimeEngine:
        """Registry entry point: exports a torch module to the cache first."""
        from virtime.engines.onnx_export import ensure_onnx

        cache = request.cache
        path = ensure_onnx(model_or_onnx, cache, window=request.window, opset=opset)
        return cls(
            path, precision=request.precision, device=request.device,
            max_batch=request.max_batch, window=request.window, threads=threads, cache_dir=cache,
        )

    def _run_chunk(self, x: np.ndarray) -> np.ndarray:
        if x.dtype != self.input_dtype:
            x = x.astype(self.input_dtype)
        (y,) = self._session.run([self._output_name], {self._input_name: x})
        return np.asarray(y, dtype=np.float32)

    # -- device tensors (I/O binding) -----------------------------------------------------------
    def run_tensor(self, x: Any) -> Any:
        """Float32 logits for a torch tensor through I/O binding: ONNX Runtime reads and writes
        the tensors' own memory (device buffers with the CUDA execution provider, host memory on
        CPU), so nothing is staged through numpy."""
        import torch

        x = self._check_tensor(x)
        if self.out_channels is None:  # learn the channel count once through the host path
            return super().run_tensor(x)
        cuda = self.device.startswith("cuda")
        dev = torch.device(self.device) if cuda else torch.device("cpu")
        want = torch.float16 if self.input_dtype == np.float16 else torch.float32
        out_t = torch.float16 if "float16" in self._session.get_outputs()[0].type else torch.float32
        n, _, h, w = (int(v) for v in x.shape)
        out = torch.empty((n, self.out_channels, h, w), dtype=torch.float32, device=dev)
        i = 0
        while i < n:
            size = min(self.max_batch, n - i)
            xin = x[i : i + size].to(device=dev, dtype=want).contiguous()
            yout = out[i : i + size] if out_t == torch.float32 else torch.empty(
                (size, self.out_channels, h, w), dtype=out_t, device=dev)
            if cuda:  # ONNX Runtime runs on its own stream: the input must be written first
                torch.cuda.current_stream(dev).synchronize()
            try:
                self._run_bound(xin, yout, "cuda" if cuda else "cpu", dev.index or 0)
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                self._shrink_after_oom(size, exc)
                continue
            if yout.data_ptr() != out[i].data_ptr():
                out[i : i + size].copy_(yout)
            i += size
        return out if x.device == dev else out.to(x.device)

    def _run_bound(self, xin: Any, yout: Any, device_type: str, device_id: int) -> None:
        import torch

        np_of = {torch.float32: np.float32, torch.float16: np.float16}
        binding = self._session.io_binding()
        binding.bind_input(self._input_name, device_type, device_id, np_of[xin.dtype],
                           tuple(xin.shape), xin.data_ptr())
        binding.bind_output(self._output_name, device_type, device_id, np_of[yout.dtype],
                            tuple(yout.shape), yout.data_ptr())
        self._session.run_with_iobinding(binding)

    def close(self) -> None:
        self._session = None
