"""PyTorch engine: CPU or CUDA, fp32/TF32/fp16/bf16, channels_last, CUDA graphs, torch.compile.

The reference backend: every other engine is checked against a plain ``model(x)`` in fp32.
channels_last (the default) lets cuDNN use its NHWC tensor-core kernels on a GPU and oneDNN its
faster kernels on CPU, and CUDA graphs (one per batch shape, up to ``_MAX_GRAPHS``, then shorter
batches are zero-padded to the ``max_batch`` graph) remove the per-layer launch overhead that
dominates small windows. :meth:`TorchEngine.run_tensor` runs device tensors without host copies.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from typing import Any, ClassVar

import numpy as np

from virtime.channels import CHANNELS
from virtime.engines.base import BaseEngine, EngineRequest, cuda_available
from virtime.errors import (
    BackendUnavailableError,
    InputDataError,
    InvalidArgumentError,
    ModelMismatchError,
)

__all__ = ["TorchEngine"]

logger = logging.getLogger(__name__)

_NP_TO_TYPESTR = {np.dtype(np.float32): "<f4", np.dtype(np.float16): "<f2"}
#: CUDA graphs kept per engine (one per batch shape); further shapes replay the padded max graph.
_MAX_GRAPHS = 8


class _DeviceArray:
    """A raw CUDA pointer dressed in ``__cuda_array_interface__`` so torch can wrap it, no copy."""

    def __init__(self, ptr: int, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.__cuda_array_interface__ = {
            "shape": shape,
            "typestr": _NP_TO_TYPESTR[np.dtype(dtype)],
            "data": (int(ptr), False),
            "strides": None,
            "version": 2,
        }


class TorchEngine(BaseEngine):
    """Run a ``torch.nn.Module`` directly.

    Parameters
    ----------
    model
        Module mapping ``(N, 3, H, W)`` to ``(N, C, H, W)`` logits. It is copied before any dtype,
        device or memory-format change, so the caller's module is left as it was.
    precision, device, max_batch, window
        See :func:`virtime.engines.create_engine`. Any window size works for ``run``; ``window``
        fixes the CUDA-graph shape and ``run_device`` buffers.
    channels_last
        NHWC memory format (default on: cuDNN tensor-core kernels on CUDA; oneDNN measured
        1.2-1.9x faster than NCHW on CPU for GigaTIME, see benchmarks/RESULTS.md).
    cuda_graph
        Capture a CUDA graph per batch shape and replay it (CUDA only; all graphs share one
        memory pool).
    input_dtype
        dtype of the buffers given to ``run_device`` (float32 or float16).
    tf32
        fp32 convolutions and matmuls on TF32 tensor cores (True), strict IEEE fp32 (False), or
        torch's defaults (None: cuDNN convolutions TF32, matmuls fp32). Set around each forward
        only, restored afterwards (CUDA only; ignored on CPU).
    compile
        ``torch.compile`` the model: True, or a mode (``"max-autotune"``, ``"reduce-overhead"``).
    compile_backend
        ``torch.compile`` backend (default ``"inductor"``).
    """

    name: ClassVar[str] = "torch"
    supports_device_io: ClassVar[bool] = True
    OPTIONS: ClassVar[frozenset[str]] = frozenset(
        {"channels_last", "cuda_graph", "input_dtype", "out_channels", "tf32", "compile",
         "compile_backend"}
    )

    def __init__(
        self,
        model: Any,
        *,
        precision: str = "fp32",
        device: str | None = None,
        max_batch: int = 32,
        window: int = 256,
        channels_last: bool | None = None,
        cuda_graph: bool = False,
        input_dtype: Any = np.float32,
        out_channels: int | None = None,
        tf32: bool | None = None,
        compile: bool | str = False,
        compile_backend: str = "inductor",
    ) -> None:
        import torch

        if not isinstance(model, torch.nn.Module):
            raise InvalidArgumentError(
                f"the torch backend needs a torch.nn.Module, got {type(model).__name__}"
                " (ONNX files run on the onnxruntime or tensorrt backends)"
            )
        try:
            dev = torch.device(
                device if device is not None else ("cuda" if cuda_available() else "cpu")
            )
        except RuntimeError as exc:
            raise InvalidArgumentError(f"not a torch device: {device!r}") from exc
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailableError(f"device {dev} requested but torch sees no CUDA GPU")
        if dev.type not in ("cpu", "cuda"):
            raise InvalidArgumentError(f"torch engine supports cpu and cuda devices, got {dev}")
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        super().__init__(
            precision=precision, device=str(dev), max_batch=max_batch, window=window,
            out_channels=out_channels,
        )
        self._torch = torch
        self._dev = dev
        self._dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[
            precision
        ]
        self.channels_last = True if channels_last is None else bool(channels_last)
        if cuda_graph and dev.type != "cuda":
            raise InvalidArgumentError("cuda_graph=True needs a CUDA device")
        self.cuda_graph = bool(cuda_graph)
        self.input_dtype = np.dtype(input_dtype)
        if self.input_dtype not in _NP_TO_TYPESTR:
            raise InvalidArgumentError(f"input_dtype must be float32 or float16, got {input_dtype}")
        if dev.type == "cpu" and precision == "fp16":
            logger.warning("fp16 on CPU is emulated by torch and slow; fp32 is usually faster there")

        params = list(model.parameters())
        needs_copy = (
            any(p.dtype != self._dtype or p.device != dev for p in params)
            or self.channels_last
            or model.training
        )
        net = copy.deepcopy(model) if needs_copy else model
        net = net.to(device=dev, dtype=self._dtype).eval()
        if self.channels_last:
            net = net.to(memory_format=torch.channels_last)
        self.tf32 = None if tf32 is None else bool(tf32)
        self.compiled = bool(compile)
        if compile:
            mode = compile if isinstance(compile, str) else None
            net = torch.compile(net, mode=mode, backend=compile_backend, dynamic=False)
        self._model = net
        # CUDA graphs by input shape: (graph, static input, static output).
        self._graphs: dict[tuple[int, ...], tuple[Any, Any, Any]] = {}
        self._graph_pool: Any = None

    @classmethod
    def _from_request(cls, model_or_onnx: Any, request: EngineRequest, **opts: Any) -> TorchEngine:
        """Registry entry point (``cache_dir`` is unused by this backend)."""
        return cls(
            model_or_onnx, precision=request.precision, device=request.device,
            max_batch=request.max_batch, window=request.window, **opts,
        )

    # -- forward --------------------------------------------------------------------------------
    def _prepare(self, x: Any) -> Any:
        torch = self._torch
        x = x.to(device=self._dev, dtype=self._dtype, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    @contextlib.contextmanager
    def _precision_flags(self) -> Any:
        """TF32 on or off around one forward (CUDA only), restored afterwards."""
        if self.tf32 is None or self._dev.type != "cuda":
            yield
            return
        torch = self._torch
        value = "tf32" if self.tf32 else "ieee"
        conv = getattr(torch.backends.cudnn, "conv", None)
        if conv is not None and hasattr(conv, "fp32_precision"):  # torch >= 2.9
            targets = [(conv, "fp32_precision", value),
                       (torch.backends.cuda.matmul, "fp32_precision", value)]
        else:
            targets = [(torch.backends.cudnn, "allow_tf32", self.tf32),
                       (torch.backends.cuda.matmul, "allow_tf32", self.tf32)]
        saved = [(obj, attr, getattr(obj, attr)) for obj, attr, _ in targets]
        try:
            for obj, attr, v in targets:
                setattr(obj, attr, v)
            yield
        finally:
            for obj, attr, v in saved:
                setattr(obj, attr, v)

    def _forward(self, x: Any) -> Any:
        """Logits in compute dtype for a prepared device tensor ``x``."""
        with self._precision_flags():
            return self._forward_inner(x)

    def _forward_inner(self, x: Any) -> Any:
        torch = self._torch
        if self.cuda_graph and x.shape[0] <= self.max_batch:
            return self._graph_forward(x)
        y = self._model(x)
        if not isinstance(y, torch.Tensor) or y.ndim != 4 or y.shape[0] != x.shape[0]:
            got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
            raise ModelMismatchError(
                f"model must return (N, C, H, W) logits for N={x.shape[0]}, got {got}"
            )
        return y

    def _capture(self, shape: tuple[int, ...]) -> tuple[Any, Any, Any]:
        torch = self._torch
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        static_in = torch.zeros(shape, device=self._dev, dtype=self._dtype).contiguous(
            memory_format=fmt
        )
        side = torch.cuda.Stream(self._dev)
        side.wait_stream(torch.cuda.current_stream(self._dev))
        with torch.cuda.stream(side):
            for _ in range(3):  # warm-up so cuDNN picks its algorithms outside the capture
                self._model(static_in)
        torch.cuda.current_stream(self._dev).wait_stream(side)
        if self._graph_pool is None:
            self._graph_pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._graph_pool):
            static_out = self._model(static_in)
        logger.info("captured a CUDA graph for batch %s", shape)
        return graph, static_in, static_out

    def _graph_forward(self, x: Any) -> Any:
        n = x.shape[0]
        shape = tuple(int(v) for v in x.shape)
        if shape not in self._graphs and len(self._graphs) >= _MAX_GRAPHS:
            shape = (self.max_batch, *shape[1:])  # replay the padded full-batch graph
        if shape not in self._graphs:
            self._graphs[shape] = self._capture(shape)
        graph, static_in, static_out = self._graphs[shape]
        static_in[:n].copy_(x)
        if n < shape[0]:
            static_in[n:].zero_()
        graph.replay()
        return static_out[:n].clone()  # the next replay overwrites the static output

    def _run_chunk(self, x: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            y = self._forward(self._prepare(torch.from_numpy(x)))
            return y.to(dtype=torch.float32).contiguous().cpu().numpy()

    def _release_memory(self) -> None:
        self._graphs.clear()
        self._graph_pool = None
        if self._dev.type == "cuda":
            self._torch.cuda.empty_cache()

    def _on_batch_change(self) -> None:
        self._graphs = {k: v for k, v in self._graphs.items() if k[0] <= self.max_batch}

    # -- device tensors -------------------------------------------------------------------------
    def run_tensor(self, x: Any) -> Any:
        """Float32 logits ``(N, C, H, W)`` on the engine's device for a tensor ``(N, 3, H, W)``.

        ``x`` should already be on the engine's device (it is moved otherwise); any float dtype
        and memory format. Runs under ``torch.inference_mode`` on the current stream, chunked by
        ``max_batch`` with the same out-of-memory back-off as :meth:`run`; never synchronizes.
        """
        torch = self._torch
        x = self._check_tensor(x)
        n = int(x.shape[0])
        if n == 0:
            return torch.empty((0, self.out_channels or 0, *x.shape[2:]), dtype=torch.float32,
                               device=self._dev)
        with torch.inference_mode():
            out: Any = None
            chunks = self._chunks(n, lambda j, k: self._forward(self._prepare(x[j : j + k])))
            for i, size, y in chunks:
                y = y.to(dtype=torch.float32)
                self.out_channels = int(y.shape[1])
                if size == n:
                    return y
                if out is None:
                    out = torch.empty((n, *y.shape[1:]), dtype=torch.float32, device=self._dev)
                out[i : i + size].copy_(y)
            return out

    # -- device buffers -------------------------------------------------------------------------
    def run_device(self, in_ptr: Any, out_ptr: Any, n: int, stream: int = 0) -> None:
        """Fill ``out_ptr`` (float32 ``(n, C, window, window)``) from ``in_ptr``
        (``input_dtype`` ``(n, 3, window, window)``) on CUDA stream ``stream``.

        Pointers may be raw ints or CUDA torch tensors. Work is queued on ``stream`` (0 = torch's
        current stream); the call returns without synchronizing.
        """
        torch = self._torch
        if self._dev.type != "cuda":
            raise InvalidArgumentError("run_device needs the torch engine on a CUDA device")
        if n < 0:
            raise InvalidArgumentError(f"n must be >= 0, got {n}")
        if n == 0:
            return
        if self.out_channels is None:
            self.out_channels = len(CHANNELS)
        w = self.window
        xin = self._wrap(in_ptr, (n, 3, w, w), self.input_dtype)
        yout = self._wrap(out_ptr, (n, self.out_channels, w, w), np.dtype(np.float32))
        ctx = (
            torch.cuda.stream(torch.cuda.ExternalStream(int(stream), device=self._dev))
            if stream
            else contextlib.nullcontext()
        )
        with ctx, torch.inference_mode():
            chunks = self._chunks(n, lambda j, k: self._forward(self._prepare(xin[j : j + k])))
            for i, size, y in chunks:
                if y.shape[1] != self.out_channels:
                    raise InputDataError(
                        f"model returned {y.shape[1]} channels; the output buffer was sized for "
                        f"{self.out_channels} (pass out_channels=...)"
                    )
                yout[i : i + size].copy_(y)

    def _wrap(self, ptr: Any, shape: tuple[int, ...], dtype: np.dtype) -> Any:
        torch = self._torch
        if isinstance(ptr, torch.Tensor):
            want = torch.float16 if dtype == np.float16 else torch.float32
            count = int(np.prod(shape))
            if ptr.dtype != want or ptr.numel() < count or not ptr.is_contiguous():
                raise InputDataError(
                    f"device tensor must be contiguous {want} with at least {count} elements "
                    f"for shape {shape}, got {ptr.dtype} {tuple(ptr.shape)}"
                )
            return ptr.view(-1)[:count].view(shape)
        return torch.as_tensor(_DeviceArray(ptr, shape, dtype), device=self._dev)

    def close(self) -> None:
        if self._model is None:
            return
        self._release_memory()
        self._model = None
