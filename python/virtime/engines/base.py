"""The inference-engine protocol, a shared base class with out-of-memory back-off, and the registry.

Every backend (torch, ONNX Runtime, TensorRT, OpenVINO) answers the same small protocol so the
whole-slide pipeline never branches on the backend. Backends are registered by *dotted path* and
imported only when chosen, so ``import virtime.engines`` never imports onnxruntime, OpenVINO or
TensorRT.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable

import numpy as np

from virtime.errors import (
    BackendUnavailableError,
    CudaError,
    InputDataError,
    InvalidArgumentError,
)

__all__ = [
    "BACKENDS",
    "INT8_BACKENDS",
    "PRECISIONS",
    "BaseEngine",
    "Engine",
    "EngineRequest",
    "check_int8_request",
    "cpu_threads",
    "create_engine",
    "cuda_available",
    "default_cache_dir",
    "is_out_of_memory",
    "register_backend",
    "registered_backends",
    "resolve_backend",
    "tensorrt_installed",
]

logger = logging.getLogger(__name__)

#: Names accepted by ``--backend``.
BACKENDS: tuple[str, ...] = ("auto", "torch", "onnxruntime", "tensorrt", "openvino")
#: Compute precisions; the logits handed back are always float32. ``int8`` runs an INT8
#: translator made by ``virtime quantize`` (:mod:`virtime.quantize`), on the backends below only.
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "bf16", "int8")
#: Backends that run INT8 translators.
INT8_BACKENDS: tuple[str, ...] = ("openvino",)

_REGISTRY: dict[str, str] = {
    "torch": "virtime.engines.torch_engine:TorchEngine",
    "onnxruntime": "virtime.engines.onnxruntime_engine:OnnxRuntimeEngine",
    "tensorrt": "virtime.engines.tensorrt_engine:TensorRTEngine",
    "openvino": "virtime.engines.openvino_engine:OpenVinoEngine",
}

_OOM_MESSAGES = (
    "out of memory",
    "failed to allocate memory",
    "cudaerrormemoryallocation",
    "cuda_error_out_of_memory",
    "outofmemory",
)


@runtime_checkable
class Engine(Protocol):
    """What the pipeline needs from a backend.

    ``run`` takes a host batch ``(N, 3, H, W)`` float32/float16 (ImageNet-normalized) and returns
    float32 logits ``(N, C, H, W)``. ``run_device`` does the same on device buffers the caller owns
    (``in_ptr``/``out_ptr`` raw CUDA pointers, ``stream`` a ``cudaStream_t`` as int) so the C++
    batcher can fill GPU memory directly; backends without it raise ``BackendUnavailableError``.

    ``run_tensor`` is the device hot path: a ``torch.Tensor`` ``(N, 3, H, W)`` on the engine's
    ``device`` in, float32 logits ``(N, C, H, W)`` on the same device out, queued on the current
    torch stream with no host copy where the backend can (torch, TensorRT, ONNX Runtime I/O
    binding); host-only backends copy through ``run``.
    """

    name: str
    precision: str
    device: str
    max_batch: int

    def run(self, batch: np.ndarray) -> np.ndarray: ...

    def run_tensor(self, x: Any) -> Any: ...

    def run_device(self, in_ptr: int, out_ptr: int, n: int, stream: int = 0) -> None: ...

    def close(self) -> None: ...


def is_out_of_memory(exc: BaseException) -> bool:
    """True for the out-of-memory errors of torch, ONNX Runtime, TensorRT and the host."""
    if isinstance(exc, MemoryError):
        return True
    torch = sys.modules.get("torch")
    oom_cls = getattr(getattr(torch, "cuda", None), "OutOfMemoryError", None)
    if oom_cls is not None and isinstance(exc, oom_cls):
        return True
    text = str(exc).lower().replace(" ", "")
    return any(m.replace(" ", "") in text for m in _OOM_MESSAGES)


def cpu_threads() -> int:
    """Cores this process may use (respects CPU affinity / container limits where visible)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def cuda_available() -> bool:
    """Whether torch sees a CUDA device (False when torch is a CPU build)."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def tensorrt_installed() -> bool:
    """Whether either TensorRT flavour is importable, without importing it."""
    return any(importlib.util.find_spec(m) is not None for m in ("tensorrt", "tensorrt_rtx"))


def default_cache_dir() -> Path:
    """``$VIRTIME_CACHE_DIR`` or ``$XDG_CACHE_HOME/virtime`` (``~/.cache/virtime``)."""
    env = os.environ.get("VIRTIME_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "virtime"


_T = TypeVar("_T")
_E = TypeVar("_E", bound="BaseEngine")


@dataclass(frozen=True)
class EngineRequest:
    """The backend-independent arguments of :func:`create_engine`, as one backend receives them."""

    precision: str
    device: str | None
    cache_dir: str | os.PathLike[str] | None
    max_batch: int
    window: int

    @property
    def cache(self) -> Path:
        """``cache_dir`` as a path, :func:`default_cache_dir` when none was given."""
        return Path(self.cache_dir) if self.cache_dir is not None else default_cache_dir()


class BaseEngine:
    """Shared input checks, chunking by ``max_batch`` and out-of-memory back-off.

    Subclasses implement ``_run_chunk(x)`` for one chunk of at most ``max_batch`` items. When a
    chunk raises an out-of-memory error, the batch size is halved (kept for later calls, since
    memory pressure rarely goes away), a warning is logged and the same items are tried again; a
    batch of one that still does not fit raises :class:`~virtime.errors.CudaError`.
    """

    name: ClassVar[str] = "base"
    supports_device_io: ClassVar[bool] = False
    #: Backend-specific keyword options that ``create`` accepts.
    OPTIONS: ClassVar[frozenset[str]] = frozenset()

    def __init__(
        self,
        *,
        precision: str,
        device: str,
        max_batch: int,
        window: int | None,
        out_channels: int | None = None,
        fixed_window: bool = False,
    ) -> None:
        if precision not in PRECISIONS:
            raise InvalidArgumentError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if int(max_batch) < 1:
            raise InvalidArgumentError(f"max_batch must be >= 1, got {max_batch}")
        self.precision = precision
        self.device = device
        self.max_batch = int(max_batch)
        self.window = None if window is None else int(window)
        self.out_channels = out_channels
        self._fixed_window = fixed_window
        self.input_dtype: np.dtype = np.dtype(np.float32)

    @classmethod
    def create(  # noqa: PYI019  (typing.Self needs Python 3.11)
        cls: type[_E],
        model_or_onnx: Any,
        *,
        precision: str,
        device: str | None,
        cache_dir: str | os.PathLike[str] | None,
        max_batch: int,
        window: int,
        **opts: Any,
    ) -> _E:
        """Registry entry point: what :func:`create_engine` calls, with the backend's ``OPTIONS``
        in ``opts`` (each backend builds itself in ``_from_request``)."""
        request = EngineRequest(precision=precision, device=device, cache_dir=cache_dir,
                                max_batch=max_batch, window=window)
        return cls._from_request(model_or_onnx, request, **opts)

    @classmethod
    def _from_request(  # noqa: PYI019
        cls: type[_E], model_or_onnx: Any, request: EngineRequest, **opts: Any
    ) -> _E:
        raise NotImplementedError

    # -- protocol -------------------------------------------------------------------------------
    def run(self, batch: np.ndarray) -> np.ndarray:
        """Logits ``(N, C, H, W)`` float32 for a host batch ``(N, 3, H, W)``."""
        x = self._check_batch(batch)
        n = x.shape[0]
        out: np.ndarray | None = None
        if n == 0:
            c = self.out_channels or 0
            return np.empty((0, c, x.shape[2], x.shape[3]), dtype=np.float32)
        if n <= self.max_batch:  # one chunk: hand the engine's output over without a copy
            try:
                y = self._run_chunk(x)
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                self._shrink_after_oom(n, exc)
            else:
                if y.shape[0] != n or y.ndim != 4:
                    raise InputDataError(
                        f"{self.name} engine returned shape {y.shape} for a chunk of {n} windows"
                    )
                self.out_channels = int(y.shape[1])
                return np.asarray(y, dtype=np.float32)
        for i, size, y in self._chunks(n, lambda j, k: self._run_chunk(x[j : j + k])):
            if y.shape[0] != size or y.ndim != 4:
                raise InputDataError(
                    f"{self.name} engine returned shape {y.shape} for a chunk of {size} windows"
                )
            if out is None:
                out = np.empty((n, *y.shape[1:]), dtype=np.float32)
                self.out_channels = int(y.shape[1])
            out[i : i + size] = y
        assert out is not None
        return out

    def run_device(self, in_ptr: int, out_ptr: int, n: int, stream: int = 0) -> None:
        """Device-buffer inference; only some backends support it."""
        raise BackendUnavailableError(f"the {self.name} engine does not run on device buffers")

    def run_tensor(self, x: Any) -> Any:
        """Float32 logits ``(N, C, H, W)`` for a ``torch.Tensor`` ``(N, 3, H, W)``, on ``x``'s device.

        Generic form: an engine with device I/O on a CUDA device (TensorRT) runs
        :meth:`run_device` between device tensors on the current torch stream, with no host copy
        and no synchronization; any other engine goes through :meth:`run` (a host round trip, free
        on CPU where numpy shares the tensor's memory). Backends override it where they can do
        better (torch, ONNX Runtime I/O binding).
        """
        import torch

        x = self._check_tensor(x)
        if self.supports_device_io and str(self.device).startswith("cuda") and x.is_cuda:
            n, _, h, w = (int(v) for v in x.shape)
            want = torch.float16 if self.input_dtype == np.float16 else torch.float32
            xin = x.to(dtype=want).contiguous()
            out = torch.empty((n, int(self.out_channels or 0), h, w), dtype=torch.float32,
                              device=x.device)
            if n:
                self.run_device(xin.data_ptr(), out.data_ptr(), n,
                                torch.cuda.current_stream(x.device).cuda_stream)
            return out
        host = x.detach().to("cpu")
        dtype = torch.float16 if self.input_dtype == np.float16 else torch.float32
        y = self.run(host.to(dtype).contiguous().numpy())
        return torch.from_numpy(y).to(x.device)

    def close(self) -> None:
        """Release backend resources (idempotent)."""

    def __enter__(self) -> BaseEngine:  # noqa: PYI034  (typing.Self needs Python 3.11)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(precision={self.precision!r}, device={self.device!r}, "
            f"max_batch={self.max_batch}, window={self.window})"
        )

    # -- for subclasses -------------------------------------------------------------------------
    def _run_chunk(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _release_memory(self) -> None:
        """Free cached device memory after an out-of-memory error (backend-specific)."""

    def _shrink_after_oom(self, size: int, exc: BaseException) -> None:
        if size <= 1:
            raise CudaError(
                f"{self.name} engine on {self.device} ran out of memory with a batch of 1: {exc}"
            ) from exc
        new = max(1, size // 2)
        logger.warning(
            "%s engine on %s ran out of memory at batch %d; halving the batch to %d and going on",
            self.name, self.device, size, new,
        )
        self._release_memory()
        self.max_batch = new
        self._on_batch_change()

    def _on_batch_change(self) -> None:
        """Hook for engines that cache per-batch-size state (CUDA graphs)."""

    def _chunks(
        self, n: int, forward: Callable[[int, int], _T]
    ) -> Iterator[tuple[int, int, _T]]:
        """``(start, size, forward(start, size))`` for consecutive chunks of ``n`` items, each of
        at most ``max_batch``.

        An out-of-memory error from ``forward`` halves ``max_batch`` (:meth:`_shrink_after_oom`)
        and the same items are tried again; any other error propagates unchanged.
        """
        i = 0
        while i < n:
            size = min(self.max_batch, n - i)
            try:
                y = forward(i, size)
            except Exception as exc:  # classified below; anything else propagates unchanged
                if not is_out_of_memory(exc):
                    raise
                self._shrink_after_oom(size, exc)
                continue
            yield i, size, y
            i += size

    def _check_tensor(self, x: Any) -> Any:
        torch = sys.modules.get("torch")
        if torch is None or not isinstance(x, torch.Tensor):
            raise InputDataError(f"run_tensor takes a torch.Tensor, got {type(x).__name__}")
        if x.ndim != 4 or x.shape[1] != 3:
            raise InputDataError(f"batch must have shape (N, 3, H, W), got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise InputDataError(f"batch must be a float tensor, got {x.dtype}")
        if self._fixed_window and self.window is not None and tuple(x.shape[2:]) != (
            self.window, self.window,
        ):
            raise InputDataError(
                f"the {self.name} engine was built for {self.window}x{self.window} windows, "
                f"got {x.shape[2]}x{x.shape[3]}"
            )
        return x

    def _check_batch(self, batch: np.ndarray) -> np.ndarray:
        if not isinstance(batch, np.ndarray):
            raise InputDataError(f"batch must be a numpy array, got {type(batch).__name__}")
        if batch.ndim != 4 or batch.shape[1] != 3:
            raise InputDataError(f"batch must have shape (N, 3, H, W), got {batch.shape}")
        if batch.dtype not in (np.float32, np.float16):
            raise InputDataError(f"batch must be float32 or float16, got {batch.dtype}")
        if self._fixed_window and self.window is not None and batch.shape[2:] != (
            self.window,
            self.window,
        ):
            raise InputDataError(
                f"the {self.name} engine was built for {self.window}x{self.window} windows, "
                f"got {batch.shape[2]}x{batch.shape[3]}"
            )
        return np.ascontiguousarray(batch)


# -- registry ----------------------------------------------------------------------------------
def register_backend(name: str, target: str) -> None:
    """Register ``"package.module:Class"`` under ``name``; the module is imported on first use."""
    if ":" not in target:
        raise InvalidArgumentError(f"backend target must look like 'module:Class', got {target!r}")
    _REGISTRY[name] = target


def registered_backends() -> tuple[str, ...]:
    """Names that ``create_engine`` accepts besides ``"auto"``."""
    return tuple(_REGISTRY)


def _backend_class(name: str) -> Any:
    try:
        target = _REGISTRY[name]
    except KeyError:
        raise InvalidArgumentError(
            f"unknown backend {name!r}; choose one of {('auto', *_REGISTRY)}"
        ) from None
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def _machine_capabilities(device: str | None) -> Any:
    """This machine's :class:`~virtime.engines.selection.Capabilities` (a seam for tests)."""
    from virtime.engines.selection import Capabilities, detect_capabilities

    if (device is not None and device.startswith("cpu")) or not cuda_available():
        return Capabilities(openvino=importlib.util.find_spec("openvino") is not None)
    return detect_capabilities(device)


def _auto_choice(device: str | None, precision: str, onnx_file: bool = False) -> Any:
    from virtime.engines.selection import choose_backends

    on_cpu = device is not None and device.startswith("cpu")
    return choose_backends(_machine_capabilities(device), precision, on_cpu=on_cpu,
                           onnx_file=onnx_file)


def _auto_candidates(device: str | None, precision: str) -> list[str]:
    return list(_auto_choice(device, precision).candidates)


def resolve_backend(backend: str, device: str | None = None, precision: str = "fp32") -> str:
    """The concrete backend ``auto`` stands for here (see :mod:`virtime.engines.selection`:
    TensorRT on a GPU it supports, else torch CUDA, else ONNX Runtime on CPU); other names are
    validated and returned as is."""
    if backend == "auto":
        return _auto_candidates(device, precision)[0]
    if backend not in _REGISTRY:
        raise InvalidArgumentError(
            f"unknown backend {backend!r}; choose one of {('auto', *_REGISTRY)}"
        )
    return backend


def _measured_cpu_engine(model_or_onnx: Any, candidates: list[str], opts: dict[str, Any],
                         request: EngineRequest) -> Engine:
    """``auto`` on a CPU: the fastest installed candidate, measured once per machine and model
    (:mod:`virtime.engines.cpu_choice`)."""
    from virtime.engines.cpu_choice import measured_cpu_engine

    def build(name: str) -> Any:
        cls = _backend_class(name)
        mine = {k: v for k, v in opts.items() if k in cls.OPTIONS}
        return cls._from_request(model_or_onnx, request, **mine)

    return measured_cpu_engine(model_or_onnx, candidates, build, cache_dir=request.cache,
                               window=request.window, precision=request.precision,
                               threads=int(opts.get("threads") or cpu_threads()))


def check_int8_request(model_or_onnx: Any, backend: str, precision: str) -> None:
    """Refuse, in one line, a precision the model or backend cannot run.

    ``int8`` needs an INT8 translator (``virtime quantize``; it has an ``ir_path``) on a backend of
    :data:`INT8_BACKENDS`; an INT8 translator runs at ``int8`` only.
    """
    is_int8_model = getattr(model_or_onnx, "ir_path", None) is not None
    if precision == "int8":
        if backend not in ("auto", *INT8_BACKENDS):
            raise InvalidArgumentError(
                f"--precision int8 runs on the {'/'.join(INT8_BACKENDS)} backend only; the "
                f"{backend} backend cannot run INT8 translators (use --backend openvino or auto)"
            )
        if not is_int8_model:
            card = getattr(model_or_onnx, "card", None)
            what = getattr(card, "weights_file", "") or (
                str(model_or_onnx) if isinstance(model_or_onnx, (str, os.PathLike)) else "")
            raise InvalidArgumentError(
                f"{what or 'the model'}: fp32 weights; --precision int8 needs an INT8 translator "
                f"made by virtime quantize (its .xml, with the model card beside it)"
            )
    elif is_int8_model:
        raise InvalidArgumentError(
            f"{getattr(model_or_onnx, 'ir_path', '')}: an INT8 translator runs with --precision "
            f"int8, not {precision}"
        )


def create_engine(
    model_or_onnx: Any,
    backend: str = "auto",
    precision: str = "fp32",
    device: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    max_batch: int = 32,
    window: int = 256,
    **opts: Any,
) -> Engine:
    """Build an inference engine by backend name.

    Parameters
    ----------
    model_or_onnx
        A ``torch.nn.Module`` mapping ``(N, 3, H, W)`` to ``(N, C, H, W)`` logits, or the path of
        an exported ONNX file (ONNX Runtime and TensorRT only).
    backend
        ``"auto"``, ``"torch"``, ``"onnxruntime"``, ``"tensorrt"`` or ``"openvino"``. ``auto``
        tries TensorRT on a GPU when installed, then torch CUDA; on a CPU it runs the fastest
        installed engine, measured once per machine and model (torch for bf16, OpenVINO for
        int8). If the first choice is unavailable, ``auto`` falls back to the next with a
        warning.
    precision
        ``"fp32"``, ``"fp16"``, ``"bf16"`` or ``"int8"`` (an INT8 translator from
        ``virtime quantize``, OpenVINO only); outputs are float32 either way.
    device
        ``"cpu"``, ``"cuda"`` or ``"cuda:<i>"``; default the GPU when there is one.
    cache_dir
        Where exported ONNX files and TensorRT engines are kept (default
        :func:`default_cache_dir`).
    max_batch
        Largest batch per backend call (halved on out-of-memory).
    window
        Window side in pixels (ONNX export, TensorRT profiles, CUDA graphs).
    **opts
        Backend-specific options (``channels_last``, ``cuda_graph``, ``threads``, ``flavour`` ...).
    """
    if precision not in PRECISIONS:
        raise InvalidArgumentError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    check_int8_request(model_or_onnx, backend, precision)
    if backend != "auto":
        cls = _backend_class(resolve_backend(backend))
        unknown = set(opts) - set(cls.OPTIONS)
        if unknown:
            raise InvalidArgumentError(
                f"unknown option(s) {sorted(unknown)} for the {backend} backend; "
                f"it accepts {sorted(cls.OPTIONS)}"
            )
        return cls.create(
            model_or_onnx, precision=precision, device=device, cache_dir=cache_dir,
            max_batch=max_batch, window=window, **opts,
        )
    candidates = _auto_candidates(device, precision)
    choice = _auto_choice(device, precision)
    tabled = list(choice.candidates) == candidates  # False when a test seam replaced the table
    first_opts = dict(choice.options) if tabled else {}
    if isinstance(model_or_onnx, (str, os.PathLike)):
        # An ONNX file cannot run on torch: ONNX Runtime stands in for it.
        candidates = [c for c in candidates if c != "torch"]
        if "onnxruntime" not in candidates:
            candidates.append("onnxruntime")
    on_cpu = (device is not None and device.startswith("cpu")) or not cuda_available()
    if tabled and on_cpu and precision == "fp32" and len(candidates) > 1:
        # The fastest CPU engine depends on the CPU and the model: measured, then cached.
        return _measured_cpu_engine(model_or_onnx, candidates, opts, EngineRequest(
            precision=precision, device=device, cache_dir=cache_dir, max_batch=max_batch,
            window=window))
    if tabled:
        logger.info("backend auto -> %s: %s", candidates[0], choice.reason)
    errors: list[str] = []
    for i, name in enumerate(candidates):
        try:
            cls = _backend_class(name)
            # Under auto, options meant for another backend are dropped, not errors.
            mine = {k: v for k, v in opts.items() if k in cls.OPTIONS}
            if i == 0:  # e.g. the TensorRT flavour the table chose for this GPU
                mine = {**{k: v for k, v in first_opts.items() if k in cls.OPTIONS}, **mine}
            return cls.create(
                model_or_onnx, precision=precision, device=device, cache_dir=cache_dir,
                max_batch=max_batch, window=window, **mine,
            )
        except (BackendUnavailableError, ImportError) as exc:
            errors.append(f"{name}: {exc}")
            if i + 1 < len(candidates):
                logger.warning("backend %s unavailable (%s); trying %s", name, exc, candidates[i + 1])
    raise BackendUnavailableError("no inference backend is usable: " + "; ".join(errors))

