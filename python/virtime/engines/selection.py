"""Which backend ``backend="auto"`` runs on which machine, as one small table with reasons.

The facts it encodes (see the backend table in docs/engines.md):

* TensorRT-RTX 1.7 (``tensorrt_rtx``) ships kernels for SM75, SM80, SM86, SM89, SM120 and SM121
  only: **not SM90**, so it cannot run on Hopper (H100/H200); torch CUDA runs there.
* Full TensorRT (``tensorrt``) runs on every data-centre GPU it supports, but its PyPI libraries
  are download stubs on our machines, so it is used only where it imports.
* bf16 is not offered by our TensorRT or ONNX Runtime engines; torch runs it everywhere.
* On CPU the installed engines (ONNX Runtime, OpenVINO, torch) are candidates; ``auto`` runs the
  fastest of them in a short measurement on first use, cached per machine and model
  (:mod:`virtime.engines.cpu_choice`); their order here is the fallback. torch runs bf16.
* INT8 translators (``virtime quantize``) run on OpenVINO only.

:func:`choose_backends` is a pure function of a :class:`Capabilities` record, so the table is
unit-tested with fake capabilities; :func:`detect_capabilities` fills one for this machine.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

__all__ = [
    "TENSORRT_RTX_TARGETS",
    "BackendChoice",
    "Capabilities",
    "choose_backends",
    "detect_capabilities",
]

#: Compute capabilities TensorRT-RTX 1.7 builds and runs plans for (no SM90: no Hopper).
TENSORRT_RTX_TARGETS: frozenset[tuple[int, int]] = frozenset(
    {(7, 5), (8, 0), (8, 6), (8, 9), (12, 0), (12, 1)}
)


@dataclass(frozen=True)
class Capabilities:
    """What this machine offers, as far as backend choice cares.

    Attributes
    ----------
    cuda_capability
        ``(major, minor)`` of the CUDA device torch would use, or None without a GPU.
    tensorrt, tensorrt_rtx
        Whether full TensorRT / TensorRT-RTX import here.
    onnxruntime_cuda
        Whether ONNX Runtime has its CUDA execution provider.
    gpu_name
        For log messages only.
    """

    cuda_capability: tuple[int, int] | None = None
    tensorrt: bool = False
    tensorrt_rtx: bool = False
    onnxruntime_cuda: bool = False
    gpu_name: str = ""
    openvino: bool = False

    @property
    def sm(self) -> str:
        if self.cuda_capability is None:
            return "cpu"
        major, minor = self.cuda_capability
        return f"SM{major}{minor}"


@dataclass(frozen=True)
class BackendChoice:
    """Candidates in the order ``auto`` tries them, each with the reason it is there."""

    candidates: tuple[str, ...]
    reasons: tuple[str, ...]
    #: Backend-specific options the first candidate needs (e.g. ``{"flavour": "tensorrt"}``).
    options: tuple[tuple[str, str], ...] = ()

    @property
    def backend(self) -> str:
        return self.candidates[0]

    @property
    def reason(self) -> str:
        return self.reasons[0]


def choose_backends(caps: Capabilities, precision: str = "fp32", on_cpu: bool = False,
                    onnx_file: bool = False) -> BackendChoice:
    """The ordered backend candidates for ``auto`` on a machine with ``caps``.

    Parameters
    ----------
    caps
        The machine (see :func:`detect_capabilities`; tests pass fake ones).
    precision
        ``fp32``, ``fp16`` or ``bf16``.
    on_cpu
        The user asked for ``device="cpu"`` although there may be a GPU.
    onnx_file
        The model is an ONNX file (torch cannot run it).
    """
    cands: list[tuple[str, str]] = []
    gpu = caps.cuda_capability is not None and not on_cpu
    opts: tuple[tuple[str, str], ...] = ()
    if precision == "int8":
        return BackendChoice(("openvino",), ("INT8 translators run on OpenVINO (on the CPU)",))
    if gpu:
        where = f"{caps.gpu_name or 'GPU'} ({caps.sm})"
        if precision == "bf16":
            trt_reason = "our TensorRT engines do not offer bf16"
        elif caps.tensorrt:
            trt_reason = ""
            cands.append(("tensorrt", f"full TensorRT is installed and supports {where}"))
            opts = (("flavour", "tensorrt"),)
        elif caps.tensorrt_rtx and caps.cuda_capability in TENSORRT_RTX_TARGETS:
            trt_reason = ""
            cands.append(("tensorrt", f"TensorRT-RTX 1.7 targets {caps.sm} ({where})"))
            opts = (("flavour", "tensorrt-rtx"),)
        elif caps.tensorrt_rtx:
            trt_reason = (f"TensorRT-RTX 1.7 does not target {caps.sm} (it builds for SM75/80/86/"
                          f"89/120/121 only)")
        else:
            trt_reason = "no TensorRT is installed (full TensorRT is not installable here)"
        suffix = f"; {trt_reason}" if trt_reason else ""
        if not onnx_file:
            cands.append(("torch", f"torch CUDA runs on {where}{suffix}"))
        if caps.onnxruntime_cuda and precision != "bf16":
            cands.append(("onnxruntime", f"ONNX Runtime CUDA execution provider on {where}"))
        if not cands or onnx_file:
            cands.append(("onnxruntime", "ONNX Runtime (an ONNX file cannot run on torch)"))
    else:
        if precision == "bf16" and not onnx_file:
            cands.append(("torch", "ONNX Runtime has no bf16 kernels on CPU; torch does"))
        else:
            cands.append(("onnxruntime", "ONNX Runtime is the faster CPU backend for GigaTIME"))
            if caps.openvino:
                cands.append(("openvino", "OpenVINO is installed"))
            if not onnx_file:
                cands.append(("torch", "torch on CPU, if ONNX Runtime is unavailable"))
    seen: dict[str, str] = {}
    for name, why in cands:
        seen.setdefault(name, why)
    return BackendChoice(tuple(seen), tuple(seen.values()), opts)


def detect_capabilities(device: str | None = None) -> Capabilities:
    """This machine's :class:`Capabilities` (imports torch; not onnxruntime or TensorRT)."""
    cap: tuple[int, int] | None = None
    name = ""
    try:
        import torch

        if torch.cuda.is_available() and not (device or "").startswith("cpu"):
            index = torch.device(device).index if device and ":" in device else None
            index = torch.cuda.current_device() if index is None else index
            cap = tuple(torch.cuda.get_device_capability(index))  # type: ignore[assignment]
            name = torch.cuda.get_device_name(index)
    except ImportError:
        pass
    ort_cuda = False
    if cap is not None and importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime

        ort_cuda = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    return Capabilities(
        cuda_capability=cap,
        tensorrt=importlib.util.find_spec("tensorrt") is not None,
        tensorrt_rtx=importlib.util.find_spec("tensorrt_rtx") is not None,
        onnxruntime_cuda=ort_cuda,
        gpu_name=name,
        openvino=importlib.util.find_spec("openvino") is not None,
    )
