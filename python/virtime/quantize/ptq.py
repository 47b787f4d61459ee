"""Post-training INT8 quantization of a translator, calibrated and checked on the user's slides.

The fp32 model is exported to ONNX (the engine cache's export), read by OpenVINO and quantized by
NNCF's post-training quantization with activation ranges from calibration windows of the user's
own tissue (:mod:`virtime.quantize.calibration`). The INT8 model and the fp32 model then translate
held-out windows and every channel's agreement is measured (:mod:`virtime.quantize.agreement`);
the numbers go into the model card beside the IR, where :func:`virtime.models.int8.load_int8`
checks them against the accuracy gate before any translation uses the model.

Two choices keep the rare channels, measured on the demo translator (benchmarks/RESULTS.md):
activation ranges are the plain min and max over the calibration windows (NNCF's default
estimator clips the rare large activations that carry the sparse immune markers: CD16, CD11c,
CD20 fell to Dice 0), and the input block (the first two convolutions, which see the image at
full resolution: GigaTIME's ``conv0_0``) stays in fp32. Either alone left some protein channel
at Dice 0.94; together every one kept >= 0.95, at no measured speed cost. The card lists the
layers left in fp32 (unquantized in the IR; OpenVINO's CPU plugin runs them in bf16 on CPUs that
have it, as it does every unquantized op of an INT8 model).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from virtime.errors import BackendUnavailableError

__all__ = ["KEEP_FP32", "QuantizeConfig", "QuantizeResult", "fp32_layer_names",
           "quantize_onnx", "quantize_translator"]

logger = logging.getLogger(__name__)

#: ``keep_fp32`` choices: how many of the model's first convolutions (in graph order) stay fp32.
KEEP_FP32: dict[str, int] = {"input": 2, "none": 0}


@dataclass(frozen=True)
class QuantizeConfig:
    """How to calibrate and check: window counts, the tissue a window needs, the positivity
    threshold of the Dice and density comparisons, slide mpp handling and the seed of the draw."""

    calibration_tiles: int = 32
    held_out_tiles: int = 32
    min_tissue: float = 0.5
    threshold: float = 0.5
    mpp: float | None = None
    allow_mpp: bool = False
    threads: int = 0
    seed: int = 0
    batch: int = 4
    keep_fp32: str = "input"
    activation_ranges: str = "minmax"  # "minmax" or "nncf" (NNCF's default estimator)


@dataclass(frozen=True)
class QuantizeResult:
    """Where the INT8 translator was written, its card, and whether it passes the default gate."""

    xml: Path
    card: Any
    failures: list[str]
    seconds: float

    @property
    def passed(self) -> bool:
        return not self.failures


def fp32_layer_names(model: Any, keep_fp32: str) -> list[str]:
    """Names of the convolutions of the OpenVINO ``model`` that ``keep_fp32`` leaves in fp32:
    the first :data:`KEEP_FP32` ``[keep_fp32]`` ``Convolution`` ops in graph order."""
    if keep_fp32 not in KEEP_FP32:
        raise ValueError(f"keep_fp32 must be one of {', '.join(KEEP_FP32)}, not {keep_fp32!r}")
    convs = [op.get_friendly_name() for op in model.get_ordered_ops()
             if op.get_type_name() == "Convolution"]
    return convs[: KEEP_FP32[keep_fp32]]


def quantize_onnx(onnx_path: str | os.PathLike[str], calibration: np.ndarray,
                  config: QuantizeConfig = QuantizeConfig(),  # noqa: B008 - frozen
                  ) -> tuple[Any, list[str]]:
    """NNCF post-training quantization of the ONNX model at ``onnx_path``, calibrated on the
    windows ``calibration`` ``(N, 3, W, W)``: the quantized OpenVINO model and the names of the
    layers ``config.keep_fp32`` left in fp32 (no agreement check; :func:`quantize_translator`
    does that)."""
    try:
        import nncf
        import openvino as ov
        from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
        from nncf.quantization.range_estimator import RangeEstimatorParametersSet
    except ImportError as exc:
        raise BackendUnavailableError(
            f"virtime quantize needs openvino and nncf ({exc}); pip install 'virtime[openvino]'"
        ) from exc
    if config.activation_ranges not in ("minmax", "nncf"):
        raise ValueError(f"activation_ranges must be 'minmax' or 'nncf', not "
                         f"{config.activation_ranges!r}")
    nncf.set_log_level(logging.ERROR)
    model = ov.Core().read_model(os.fspath(onnx_path))
    fp32_layers = fp32_layer_names(model, config.keep_fp32)
    kwargs: dict[str, Any] = {}
    if fp32_layers:
        kwargs["ignored_scope"] = nncf.IgnoredScope(names=fp32_layers)
    if config.activation_ranges == "minmax":
        kwargs["advanced_parameters"] = AdvancedQuantizationParameters(
            activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX)
    data = nncf.Dataset([calibration[i : i + 1] for i in range(len(calibration))])
    return nncf.quantize(model, data, subset_size=len(calibration), **kwargs), fp32_layers


def _save_ir(quantized: Any, xml: Path) -> None:
    """Write the IR beside ``xml`` atomically (its ``.bin`` renamed into place first)."""
    import openvino as ov

    from virtime.io import atomic_files

    with atomic_files(xml) as tmp:
        # compress_to_fp16=False: the layers NNCF left in fp32 stay fp32.
        ov.save_model(quantized, str(tmp), compress_to_fp16=False)


def _compare(fp32: Any, int8: Any, windows: np.ndarray, slides: list[str], threshold: float,
             batch: int) -> dict[str, dict[str, Any]]:
    from scipy.special import expit

    from virtime.quantize.agreement import ChannelAgreement

    agreement = ChannelAgreement(threshold)
    names = np.asarray(slides)
    for slide in dict.fromkeys(slides):
        idx = np.flatnonzero(names == slide)
        for start in range(0, len(idx), batch):
            x = windows[idx[start : start + batch]]
            agreement.update(expit(fp32.run(x)), expit(int8.run(x)), slide)
    return agreement.summary()


def quantize_translator(
    model: Any,
    slides: list[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    config: QuantizeConfig = QuantizeConfig(),  # noqa: B008 - frozen, never mutated
    *,
    cache_dir: str | os.PathLike[str] | None = None,
) -> QuantizeResult:
    """Quantize ``model`` (a translator from :func:`virtime.models.load`) to INT8 and write
    ``OUTPUT.xml``/``.bin`` with its model card ``OUTPUT.json``.

    Calibration and held-out windows come from ``slides``; the card records per channel the
    Dice, Pearson and slide-level density against fp32 on the held-out windows, and whether the
    default gate (:data:`virtime.models.int8.DEFAULT_GATE`) passes. A failing gate is not an
    error here (the card says so, and translation refuses the model unless told to accept it).
    """
    import dataclasses

    from virtime import __version__
    from virtime.engines import create_engine, default_cache_dir
    from virtime.engines.onnx_export import ensure_onnx
    from virtime.engines.openvino_engine import OpenVinoEngine, openvino_version
    from virtime.models.card import sha256_file
    from virtime.models.int8 import (DEFAULT_GATE, describe_dice_gating, gate_failures,
                                     int8_paths, too_rare_for_dice)
    from virtime.quantize.calibration import calibration_windows

    t0 = time.perf_counter()
    openvino_version()  # a clear error before reading slides when OpenVINO is missing
    card = model.card
    window, model_mpp = int(card.window), float(card.input_mpp)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    windows = calibration_windows(
        list(slides), model_mpp=model_mpp, window=window,
        calibration_tiles=config.calibration_tiles, held_out_tiles=config.held_out_tiles,
        min_tissue=config.min_tissue, mpp=config.mpp, allow_mpp=config.allow_mpp,
        threads=config.threads, seed=config.seed)
    onnx_path = ensure_onnx(model, cache, window=window)
    quantized, fp32_layers = quantize_onnx(onnx_path, windows.calibration, config)
    xml, binary, card_path = int8_paths(output)
    _save_ir(quantized, xml)
    bin_sha = sha256_file(binary)
    with create_engine(model, backend="openvino", precision="fp32", cache_dir=cache,
                       window=window, max_batch=config.batch) as fp32, \
            OpenVinoEngine(xml, source_hash=bin_sha, precision="int8", window=window,
                           max_batch=config.batch, cache_dir=cache) as int8:
        channels = _compare(fp32, int8, windows.held_out, windows.held_out_slides,
                            config.threshold, config.batch)
    failures = gate_failures(channels, DEFAULT_GATE)
    import nncf

    int8_card = dataclasses.replace(
        card, virtime_version=__version__, weights_file=binary.name, sha256=bin_sha,
        quantization={
            "method": "NNCF post-training quantization (OpenVINO IR)",
            "nncf": nncf.__version__, "openvino": openvino_version(),
            "source_weights": card.weights_file, "source_sha256": card.sha256,
            "xml_sha256": sha256_file(xml),
            "calibration_slides": {Path(k).name: v for k, v in windows.tissue_tiles.items()},
            "calibration_tiles": len(windows.calibration),
            "held_out_tiles": len(windows.held_out),
            "min_tissue": config.min_tissue, "seed": config.seed,
            "activation_ranges": config.activation_ranges,
            "keep_fp32": config.keep_fp32, "fp32_layers": fp32_layers,
            "threshold": config.threshold,
            "gate": dataclasses.asdict(DEFAULT_GATE), "gate_passed": not failures,
            "gate_failures": failures,
            "too_rare_for_dice": too_rare_for_dice(channels, DEFAULT_GATE),
            "channels": channels,
        })
    int8_card.save(card_path)
    seconds = time.perf_counter() - t0
    logger.info("wrote INT8 translator %s (%s; %s) in %.1f s", xml,
                "passes the gate" if not failures else f"fails the gate: {', '.join(failures)}",
                describe_dice_gating(channels, DEFAULT_GATE), seconds)
    return QuantizeResult(xml=xml, card=int8_card, failures=failures, seconds=seconds)
