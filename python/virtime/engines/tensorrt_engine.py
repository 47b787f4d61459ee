"""TensorRT engine: one adapter for full TensorRT (``tensorrt``) and TensorRT-RTX (``tensorrt_rtx``).

Both flavours parse the exported ONNX, build a serialized plan for a batch profile
``(min_batch, opt_batch, max_batch) x (3, window, window)`` and run it with ``execute_async_v3``
on a CUDA stream. They differ in how reduced precision is asked for:

* full TensorRT picks kernels per layer; fp16/bf16 are builder flags on the fp32 graph;
* TensorRT-RTX is strongly typed: a layer runs in the type the graph gives it, so fp16 builds from
  the graph converted by :mod:`virtime.engines.fp16`. It can also build *ahead of time* on a machine
  without a GPU, for given compute capabilities (or its default set), which :func:`build_engine`
  exposes.

Plans are cached by :class:`~virtime.engines.engine_cache.EngineCache`. A cached plan that the
runtime refuses (another GPU, another version) is discarded with a warning and rebuilt. Neither
flavour is imported until this backend is used; device memory and streams come from torch.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import numpy as np

from virtime.engines.base import BaseEngine, EngineRequest, cuda_available, default_cache_dir
from virtime.engines.engine_cache import EngineCache, EngineKey
from virtime.errors import (
    BackendUnavailableError,
    CudaError,
    InputDataError,
    InvalidArgumentError,
    ModelMismatchError,
)

__all__ = [
    "FLAVOURS",
    "TensorRTEngine",
    "build_engine",
    "build_serialized_engine",
    "import_tensorrt",
]

logger = logging.getLogger(__name__)

#: Flavour names, in the order ``flavour="auto"`` tries them.
FLAVOURS: tuple[str, ...] = ("tensorrt", "tensorrt-rtx")
_MODULE_OF = {"tensorrt": "tensorrt", "tensorrt-rtx": "tensorrt_rtx"}
_LOGGERS: dict[str, Any] = {}


def import_tensorrt(flavour: str = "auto") -> tuple[ModuleType, str]:
    """``(module, flavour)`` for ``"tensorrt"``, ``"tensorrt-rtx"`` or the first installed."""
    if flavour != "auto" and flavour not in FLAVOURS:
        raise InvalidArgumentError(f"TensorRT flavour must be auto or one of {FLAVOURS}, got {flavour!r}")
    tried = []
    for name in FLAVOURS if flavour == "auto" else (flavour,):
        try:
            return importlib.import_module(_MODULE_OF[name]), name
        except ImportError as exc:  # includes a present package whose native library fails
            tried.append(f"{_MODULE_OF[name]}: {exc}")
    raise BackendUnavailableError(
        "TensorRT is not installed (pip install 'virtime[tensorrt-rtx]' or NVIDIA's tensorrt): "
        + "; ".join(tried)
    )


def _logger_for(trt: ModuleType) -> Any:
    """One TensorRT logger per module (TensorRT keeps the first one it sees), routed to logging."""
    if trt.__name__ not in _LOGGERS:

        class _Logger(trt.ILogger):  # type: ignore[misc, name-defined]
            def __init__(self) -> None:
                trt.ILogger.__init__(self)

            def log(self, severity: Any, msg: str) -> None:
                sev = trt.ILogger.Severity
                level = {
                    sev.INTERNAL_ERROR: logging.ERROR,
                    sev.ERROR: logging.ERROR,
                    sev.WARNING: logging.WARNING,
                    sev.INFO: logging.DEBUG,
                }.get(severity, logging.DEBUG)
                logger.log(level, "[%s] %s", trt.__name__, msg)

        _LOGGERS[trt.__name__] = _Logger()
    return _LOGGERS[trt.__name__]


def _gpu_target() -> tuple[str, int] | None:
    """``("<GPU name>|sm_XY", device index)`` of the current CUDA device, or None without one."""
    if not cuda_available():
        return None
    import torch

    index = torch.cuda.current_device()
    major, minor = torch.cuda.get_device_capability(index)
    return f"{torch.cuda.get_device_name(index)}|sm_{major}{minor}", index


def _target(flavour: str, compute_capabilities: Sequence[str] | None) -> str:
    if compute_capabilities:
        if flavour != "tensorrt-rtx":
            raise InvalidArgumentError(
                "compute_capabilities (ahead-of-time builds) need the tensorrt-rtx flavour"
            )
        return "aot:" + ",".join(sorted(c.upper() for c in compute_capabilities))
    gpu = _gpu_target()
    if gpu is not None:
        return gpu[0]
    if flavour == "tensorrt-rtx":
        return "aot:default"
    raise BackendUnavailableError(
        "full TensorRT builds engines only on a GPU; install tensorrt-rtx-cu13 to build ahead of "
        "time without one"
    )


def build_serialized_engine(
    onnx_path: str | os.PathLike[str],
    *,
    trt: ModuleType,
    flavour: str,
    precision: str = "fp32",
    min_batch: int = 1,
    opt_batch: int | None = None,
    max_batch: int = 32,
    window: int = 256,
    compute_capabilities: Sequence[str] | None = None,
    workspace_bytes: int | None = None,
) -> bytes:
    """Parse ``onnx_path`` and build a plan; raises instead of returning an empty build.

    ``onnx_path`` must already be in the precision a strongly typed flavour needs (the caller,
    :func:`build_engine`, converts it).
    """
    opt_batch = opt_batch or max_batch
    if not 1 <= min_batch <= opt_batch <= max_batch:
        raise InvalidArgumentError(
            f"need 1 <= min_batch <= opt_batch <= max_batch, got {min_batch}, {opt_batch}, {max_batch}"
        )
    log = _logger_for(trt)
    builder = trt.Builder(log)
    flags = 0
    explicit = getattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH", None)
    if explicit is not None and int(trt.__version__.split(".")[0]) < 10:
        flags |= 1 << int(explicit)  # TensorRT 8 needs it; 10 made it the only mode
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, log)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelMismatchError(f"{onnx_path}: {flavour} cannot parse the ONNX graph: {errors}")
    config = builder.create_builder_config()
    if precision == "fp16" and flavour == "tensorrt":
        config.set_flag(trt.BuilderFlag.FP16)
    elif precision == "bf16" and flavour == "tensorrt":
        if not hasattr(trt.BuilderFlag, "BF16"):
            raise InvalidArgumentError(f"TensorRT {trt.__version__} has no bf16 support")
        config.set_flag(trt.BuilderFlag.BF16)
    if workspace_bytes:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    if flavour == "tensorrt-rtx":
        caps = [c.upper() for c in compute_capabilities or ()]
        if not caps and _gpu_target() is not None:
            caps = ["CURRENT"]
        if caps:
            config.num_compute_capabilities = len(caps)
            for i, cap in enumerate(caps):
                try:
                    value = trt.ComputeCapability.__members__[cap]
                except KeyError:
                    known = [c for c in trt.ComputeCapability.__members__ if c != "NONE"]
                    raise InvalidArgumentError(
                        f"unknown compute capability {cap!r}; {flavour} knows {known}"
                    ) from None
                if not config.set_compute_capability(value, i):
                    raise BackendUnavailableError(
                        f"{flavour} {trt.__version__} cannot target compute capability {cap}"
                    )
    profile = builder.create_optimization_profile()
    name = network.get_input(0).name
    shape = (3, window, window)
    profile.set_shape(name, (min_batch, *shape), (opt_batch, *shape), (max_batch, *shape))
    config.add_optimization_profile(profile)
    logger.info(
        "building a %s %s engine (%s, batch %d..%d, window %d)",
        flavour, trt.__version__, precision, min_batch, max_batch, window,
    )
    try:
        plan = builder.build_serialized_network(network, config)
    except RuntimeError as exc:  # the bindings raise for builder-internal failures
        raise BackendUnavailableError(
            f"{flavour} {trt.__version__} failed to build an engine from {onnx_path}: {exc}"
        ) from exc
    if plan is None:
        raise BackendUnavailableError(
            f"{flavour} {trt.__version__} failed to build an engine from {onnx_path} (see the log)"
        )
    return bytes(memoryview(plan))


def _prepare_onnx(
    model_or_onnx: Any, cache: Path, *, flavour: str, precision: str, window: int
) -> tuple[Path, str, str, str]:
    """``(onnx to build from, graph hash, weights hash, input dtype)``; converted to fp16 for
    strong typing. Both cached ONNX files are verified against their sidecars on the way."""
    from virtime.engines.hashing import file_sha256, model_hash
    from virtime.engines.onnx_export import ensure_onnx

    src = ensure_onnx(model_or_onnx, cache, window=window)
    digest = file_sha256(src)
    is_file = isinstance(model_or_onnx, (str, os.PathLike))
    weights = digest if is_file else model_hash(model_or_onnx)
    if flavour == "tensorrt-rtx" and precision == "bf16":
        raise InvalidArgumentError("the tensorrt-rtx flavour builds fp32 or fp16 engines, not bf16")
    if flavour == "tensorrt-rtx" and precision == "fp16":
        from virtime.engines.fp16 import cached_fp16_onnx

        return cached_fp16_onnx(src, cache), digest, weights, "float32"
    return src, digest, weights, "float32"


def _key_and_builder(
    model_or_onnx: Any,
    *,
    cache: Path,
    flavour: str,
    precision: str,
    min_batch: int,
    opt_batch: int | None,
    max_batch: int,
    window: int,
    compute_capabilities: Sequence[str] | None,
) -> tuple[EngineKey, Any]:
    trt, flavour = import_tensorrt(flavour)
    onnx_path, digest, weights, in_dtype = _prepare_onnx(
        model_or_onnx, cache, flavour=flavour, precision=precision, window=window
    )
    key = EngineKey(
        model_hash=digest,
        flavour=flavour,
        trt_version=str(trt.__version__),
        precision=precision,
        min_batch=int(min_batch),
        opt_batch=int(opt_batch or max_batch),
        max_batch=int(max_batch),
        window=int(window),
        target=_target(flavour, compute_capabilities),
        input_dtype=in_dtype,
    )

    def build() -> bytes:
        return build_serialized_engine(
            onnx_path, trt=trt, flavour=flavour, precision=precision, min_batch=min_batch,
            opt_batch=opt_batch, max_batch=max_batch, window=window,
            compute_capabilities=compute_capabilities,
        )

    # The plan's sidecar records the weights (and verified graph) it was built from.
    built_from = {"weights_sha256": weights, "graph_sha256": digest}
    return key, (trt, build, built_from)


def build_engine(
    model_or_onnx: Any,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    precision: str = "fp32",
    max_batch: int = 32,
    opt_batch: int | None = None,
    min_batch: int = 1,
    window: int = 256,
    flavour: str = "auto",
    compute_capabilities: Sequence[str] | None = None,
) -> Path:
    """Build (or find in the cache) a serialized engine and return its path.

    Needs no GPU with the tensorrt-rtx flavour: without one, the plan targets
    ``compute_capabilities`` (e.g. ``["SM89"]``) or TensorRT-RTX's default set, ready to be
    copied to GPU machines that share the cache folder.
    """
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key, (_, build, built_from) = _key_and_builder(
        model_or_onnx, cache=cache, flavour=flavour, precision=precision, min_batch=min_batch,
        opt_batch=opt_batch, max_batch=max_batch, window=window,
        compute_capabilities=compute_capabilities,
    )
    store = EngineCache(cache)
    store.get_or_build(key, build, built_from)
    return store.paths(key)[0]


class TensorRTEngine(BaseEngine):
    """Run a TensorRT plan on a CUDA device (create it with :meth:`create`).

    To run a plan built ahead of time by :func:`build_engine`, pass the same
    ``compute_capabilities`` (the cache key's target must match); otherwise a plan for the
    current GPU is built on first use and cached.
    """

    name: ClassVar[str] = "tensorrt"
    supports_device_io: ClassVar[bool] = True
    OPTIONS: ClassVar[frozenset[str]] = frozenset(
        {"flavour", "min_batch", "opt_batch", "compute_capabilities"}
    )

    def __init__(
        self,
        trt: ModuleType,
        plan: bytes,
        *,
        key: EngineKey,
        device_index: int,
    ) -> None:
        import torch

        super().__init__(
            precision=key.precision, device=f"cuda:{device_index}", max_batch=key.max_batch,
            window=key.window, fixed_window=True,
        )
        self.flavour = key.flavour
        self.key = key
        self._torch = torch
        self._device_index = device_index
        with torch.cuda.device(device_index):
            self._runtime = trt.Runtime(_logger_for(trt))
            self._engine = self._runtime.deserialize_cuda_engine(plan)
            if self._engine is None:
                raise _StalePlanError(
                    f"{key.flavour} {key.trt_version} could not load the plan for {key.target}"
                )
            self._context = self._engine.create_execution_context()
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        inputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelMismatchError(f"expected one input and one output, got {inputs} / {outputs}")
        self._in, self._out = inputs[0], outputs[0]
        self.input_dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(self._in)))
        self._out_dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(self._out)))
        if self._out_dtype != np.float32:
            raise ModelMismatchError(f"engine output is {self._out_dtype}, expected float32")
        self.out_channels = int(self._engine.get_tensor_shape(self._out)[1])
        self._stream: Any = None

    @classmethod
    def _from_request(
        cls,
        model_or_onnx: Any,
        request: EngineRequest,
        *,
        flavour: str = "auto",
        min_batch: int = 1,
        opt_batch: int | None = None,
        compute_capabilities: Sequence[str] | None = None,
    ) -> TensorRTEngine:
        """Build or load the cached plan, then load it on the GPU (rebuilding a refused plan)."""
        device, precision = request.device, request.precision
        max_batch, window = request.max_batch, request.window
        if device is not None and not device.startswith("cuda"):
            raise InvalidArgumentError(f"the tensorrt backend runs on CUDA devices, not {device!r}")
        if not cuda_available():
            raise BackendUnavailableError(
                "running TensorRT needs a CUDA GPU; build_engine() builds plans without one"
            )
        import torch

        index = int(device.partition(":")[2] or torch.cuda.current_device()) if device else (
            torch.cuda.current_device()
        )
        cache = request.cache
        with torch.cuda.device(index):
            key, (trt, build, built_from) = _key_and_builder(
                model_or_onnx, cache=cache, flavour=flavour, precision=precision,
                min_batch=min_batch, opt_batch=opt_batch, max_batch=max_batch, window=window,
                compute_capabilities=compute_capabilities,
            )
            store = EngineCache(cache)
            plan, cached = store.get_or_build(key, build, built_from)
            try:
                return cls(trt, plan, key=key, device_index=index)
            except _StalePlanError as exc:
                if not cached:
                    raise BackendUnavailableError(str(exc)) from exc
                store.invalidate(key, f"{exc} (built for another GPU or version)")
                plan, _ = store.get_or_build(key, build, built_from)
                try:
                    return cls(trt, plan, key=key, device_index=index)
                except _StalePlanError as again:
                    raise BackendUnavailableError(str(again)) from again

    # -- execution ------------------------------------------------------------------------------
    def _execute(self, in_ptr: int, out_ptr: int, n: int, stream: int) -> None:
        w = self.window
        assert w is not None
        if not self._context.set_input_shape(self._in, (n, 3, w, w)):
            raise InputDataError(f"batch of {n} is outside the engine's profile (max {self.key.max_batch})")
        self._context.set_tensor_address(self._in, int(in_ptr))
        self._context.set_tensor_address(self._out, int(out_ptr))
        if not self._context.execute_async_v3(int(stream)):
            raise CudaError(f"{self.flavour} execute_async_v3 failed for a batch of {n}")

    def run_device(self, in_ptr: int, out_ptr: int, n: int, stream: int = 0) -> None:
        """Queue inference of ``n`` windows between device buffers on ``stream``; no sync.

        ``in_ptr``: ``input_dtype`` ``(n, 3, window, window)``; ``out_ptr``: float32
        ``(n, out_channels, window, window)``. Batches above ``max_batch`` are split.
        """
        w = self.window
        assert w is not None and self.out_channels is not None
        in_step = 3 * w * w * self.input_dtype.itemsize
        out_step = self.out_channels * w * w * 4
        i = 0
        while i < n:
            size = min(self.max_batch, n - i)
            self._execute(int(in_ptr) + i * in_step, int(out_ptr) + i * out_step, size, stream)
            i += size

    def _run_chunk(self, x: np.ndarray) -> np.ndarray:
        torch = self._torch
        dev = torch.device("cuda", self._device_index)
        tdtype = torch.float16 if self.input_dtype == np.float16 else torch.float32
        if self._stream is None:
            # A stream of our own: TensorRT syncs extra when enqueued on the legacy default stream.
            self._stream = torch.cuda.Stream(dev)
        with torch.cuda.device(dev), torch.cuda.stream(self._stream):
            xin = torch.from_numpy(x).to(dev).to(tdtype).contiguous()
            n, _, h, w = x.shape
            out = torch.empty((n, self.out_channels, h, w), dtype=torch.float32, device=dev)
            self._execute(xin.data_ptr(), out.data_ptr(), n, self._stream.cuda_stream)
            self._stream.synchronize()
            return out.cpu().numpy()

    def _release_memory(self) -> None:
        self._torch.cuda.empty_cache()

    def close(self) -> None:
        self._context = None
        self._engine = None
        self._runtime = None
        self._stream = None


class _StalePlanError(Exception):
    """The runtime refused a plan (other GPU or version): the caller rebuilds it."""
