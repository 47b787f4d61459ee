"""OpenVINO engine: fp32 translators on CPU, and the INT8 translators of ``virtime quantize``.

A torch module is exported to ONNX once (:func:`~virtime.engines.onnx_export.ensure_onnx`, keyed
by its weights); an ``.onnx`` path (the Prov-GigaPath tile encoder's graph) is read directly; an
INT8 translator (:class:`virtime.models.int8.Int8Translator`) brings its quantized OpenVINO IR.
The model compiled for this CPU is exported into the engine cache
(``<cache>/openvino/*.blob``) beside a sidecar that records what it was compiled from (the hash of
the source, the OpenVINO version, the CPU, precision and threads) and the sha256 of its bytes;
both are checked on every load, and an entry that fails is rebuilt with a warning
(:func:`virtime.engines.engine_cache.cached_file`).

fp32 is forced (``INFERENCE_PRECISION_HINT=f32``) so the OpenVINO CPU plugin never lowers it to
bf16 on CPUs that have it; ``int8`` runs the quantized graph (its integer kernels where NNCF put
quantize/dequantize pairs; the ops left unquantized, fp32 in the IR, run in the plugin's default
precision, bf16 on CPUs that have it: forcing f32 there cost 10-14 % of INT8 speed for the same
agreement with fp32, benchmarks/RESULTS.md). By default one stream and all cores per call (the
pipeline makes one call at a time); ``streams=N`` (engine option ``streams``) compiles N streams
of ``threads / N`` threads each and splits every batch into N parts run at once: for small
graphs that parallelize poorly inside one call (GigaTIME-Flash's ViT-S with 256 tokens a
window) that was 1.6-1.8x the windows/s of one stream on two busy cores (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from virtime.engines.base import BaseEngine, EngineRequest, cpu_threads, default_cache_dir
from virtime.errors import BackendUnavailableError, InvalidArgumentError

__all__ = ["DEFAULT_STREAMS", "OpenVinoEngine", "openvino_version"]

logger = logging.getLogger(__name__)


def openvino_version() -> str:
    """The installed OpenVINO runtime's version (BackendUnavailableError when it is missing)."""
    try:
        import openvino as ov
    except ImportError as exc:
        raise BackendUnavailableError(
            f"openvino is not installed ({exc}); pip install 'virtime[openvino]'"
        ) from exc
    return str(ov.get_version())


def _compile_config(precision: str, threads: int, streams: int = 1) -> dict[str, Any]:
    config: dict[str, Any] = {
        "INFERENCE_NUM_THREADS": int(threads),
        "PERFORMANCE_HINT": "LATENCY" if streams == 1 else "THROUGHPUT",
        "NUM_STREAMS": int(streams),
    }
    if precision == "fp32":
        config["INFERENCE_PRECISION_HINT"] = "f32"
    return config


#: Streams when the caller names none (capped at the threads): each batch split in two and run
#: at once measured faster than one stream with both threads.
DEFAULT_STREAMS = 2


class OpenVinoEngine(BaseEngine):
    """Run a model with the OpenVINO CPU plugin.

    Parameters
    ----------
    source
        An ONNX file or an OpenVINO IR (``.xml`` with its ``.bin``).
    source_hash
        sha256 naming what ``source`` was made from (the weights' hash, or the IR's card hash);
        part of the cache key.
    precision
        ``"fp32"`` for an fp32 graph, ``"int8"`` for a quantized IR.
    threads
        Inference threads; default all cores this process may use.
    streams
        Parallel inference streams (default :data:`DEFAULT_STREAMS`, at most ``threads``); each
        batch is split into this many parts run at once, the threads shared among them.
    cache_dir
        The engine cache (default :func:`~virtime.engines.base.default_cache_dir`).
    """

    name: ClassVar[str] = "openvino"
    OPTIONS: ClassVar[frozenset[str]] = frozenset({"threads", "opset", "streams"})

    def __init__(
        self,
        source: str | os.PathLike[str],
        *,
        source_hash: str,
        precision: str = "fp32",
        device: str | None = None,
        max_batch: int = 32,
        window: int | None = None,
        threads: int | None = None,
        streams: int | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        version = openvino_version()
        import openvino as ov

        device = device or "cpu"
        if device != "cpu":
            raise InvalidArgumentError(f"the openvino backend runs on the CPU, not {device!r}")
        if precision not in ("fp32", "int8"):
            raise InvalidArgumentError(
                f"the openvino backend runs fp32 and int8 translators, not {precision}"
            )
        super().__init__(precision=precision, device=device, max_batch=max_batch, window=window,
                         fixed_window=window is not None)
        self.threads = int(threads) if threads else cpu_threads()
        # Two streams by default (when there are two threads to share): measured faster on a
        # quiet 2-core machine for both translators' INT8 bare engines (Flash 1.33x, GigaTIME
        # 1.05x), outputs equal to one stream (benchmarks/RESULTS.md).
        self.streams = int(streams) if streams else min(DEFAULT_STREAMS, self.threads)
        if not 1 <= self.streams <= self.threads:
            raise InvalidArgumentError(f"openvino streams must be between 1 and the threads "
                                       f"({self.threads}), got {self.streams}")
        self.source = Path(source)
        core = ov.Core()
        config = _compile_config(precision, self.threads, self.streams)
        cpu_name = str(core.get_property("CPU", "FULL_DEVICE_NAME"))
        built_from = {"source_sha256": source_hash, "openvino": version, "cpu": cpu_name,
                      "precision": precision, "threads": self.threads, "window": window}
        cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        tag = f"-s{self.streams}" if self.streams > 1 else ""
        if self.streams > 1:
            built_from["streams"] = self.streams
        blob = cache / "openvino" / \
            f"{source_hash[:16]}-{precision}-w{window}-t{self.threads}{tag}.blob"

        def compile_to(tmp: Path) -> None:
            compiled = core.compile_model(core.read_model(str(self.source)), "CPU", config)
            blob = compiled.export_model()  # BytesIO (bytes in older releases)
            tmp.write_bytes(blob.getvalue() if hasattr(blob, "getvalue") else bytes(blob))

        from virtime.engines.engine_cache import cached_file

        cached_file(blob, built_from, compile_to, kind="OpenVINO compiled model")
        self.blob_path = blob
        self._compiled = core.import_model(io.BytesIO(blob.read_bytes()), "CPU", config)
        self._request = self._compiled.create_infer_request()
        self._requests = [self._request] + [self._compiled.create_infer_request()
                                            for _ in range(self.streams - 1)]
        out_shape = self._compiled.output(0).get_partial_shape()
        if out_shape.rank.is_static and len(out_shape) >= 2 and out_shape[1].is_static:
            self.out_channels = int(out_shape[1].get_length())
        logger.info("OpenVINO %s %s engine from %s (%d threads, %d stream%s, cached as %s)",
                    version, precision, self.source.name, self.threads, self.streams,
                    "s" * (self.streams > 1), blob.name)

    @classmethod
    def _from_request(
        cls, model_or_onnx: Any, request: EngineRequest, *, threads: int | None = None,
        opset: int = 17, streams: int | None = None,
    ) -> OpenVinoEngine:
        """Registry entry point: an INT8 translator's IR, an ONNX path, or a torch module (exported
        to the ONNX cache first)."""
        from virtime.engines.hashing import model_hash
        from virtime.engines.onnx_export import ensure_onnx

        ir_path = getattr(model_or_onnx, "ir_path", None)
        if ir_path is not None:
            source, digest = Path(ir_path), str(model_or_onnx.card.sha256)
        elif isinstance(model_or_onnx, (str, os.PathLike)):
            source = ensure_onnx(model_or_onnx, request.cache)
            digest = model_hash(source)
        else:
            source = ensure_onnx(model_or_onnx, request.cache, window=request.window, opset=opset)
            digest = model_hash(model_or_onnx)
        return cls(source, source_hash=digest, precision=request.precision,
                   device=request.device, max_batch=request.max_batch, window=request.window,
                   threads=threads, streams=streams, cache_dir=request.cache)

    def _run_chunk(self, x: np.ndarray) -> np.ndarray:
        if x.dtype != np.float32:
            x = x.astype(np.float32)
        if self.streams == 1 or len(x) == 1:
            result = self._request.infer({0: x})  # outputs are copied out of the request's buffers
            return np.asarray(result[self._compiled.output(0)], dtype=np.float32)
        parts = np.array_split(x, min(self.streams, len(x)))
        busy = self._requests[: len(parts)]
        for req, part in zip(busy, parts):
            req.start_async({0: np.ascontiguousarray(part)})
        for req in busy:
            req.wait()
        # concatenate copies the outputs out of the requests' buffers
        return np.concatenate([np.asarray(req.get_output_tensor(0).data, dtype=np.float32)
                               for req in busy])

    def close(self) -> None:
        self._request = None
        self._requests = []
        self._compiled = None
