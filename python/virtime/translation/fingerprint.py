"""The fingerprint of a translation: everything that determines its output, in one flat dict.

A slide folder (its canvas manifest while partial, ``summary.json`` once done) records the
fingerprint it was made with. A rerun computes the fingerprint it would make and compares:

* partial output with another fingerprint is discarded (a warning names the differing fields)
  and the slide starts fresh — finished bands of one model are never stitched to another's;
* a finished folder with another fingerprint is redone (again with a warning naming the fields),
  never reported "already done".

Fields: the output-format version, the model hash, the engine (backend, precision, device kind,
whether the device path runs, options: their numerics differ), the stain normalizer's name and a hash of its parameters and
fitted reference, the geometry (tile size, overlap, minimum tissue, window, model and output
mpp) and the slide's level-0 mpp. Batch sizes and thread counts do not change the output and are
not part of it. The *slide file* is checked separately (:mod:`virtime.slide_ids`): a folder of a
different slide is an error, not a redo.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["ENGINE_FIELDS", "OUTPUT_FORMAT", "fingerprint_diff", "format_diff",
           "normalizer_fingerprint", "translation_fingerprint"]

#: Version of the per-slide output layout and numerics; bump when either changes, so that a
#: rerun after an upgrade does not resume or accept outputs of the old format.
OUTPUT_FORMAT = 2

#: Fields that depend on the engine actually built (``backend="auto"`` picks one at run time).
ENGINE_FIELDS = ("backend", "precision", "device", "device_path", "engine_options")


def normalizer_fingerprint(normalizer: Any) -> dict[str, Any]:
    """Name and SHA-256 (16 hex digits) of a normalizer's parameters and fitted reference."""
    if normalizer is None or getattr(normalizer, "core", None) is None:
        return {"normalize": "none", "normalize_reference": None}
    h = hashlib.sha256()
    params = getattr(normalizer, "_params", None)
    if callable(params):
        h.update(json.dumps(params(), sort_keys=True, default=str).encode())
    reference = getattr(normalizer, "_reference", None)
    if callable(reference):
        for arr in reference():
            h.update(np.ascontiguousarray(np.asarray(arr, dtype=np.float64)).tobytes())
    return {"normalize": str(getattr(normalizer, "name", type(normalizer).__name__)),
            "normalize_reference": h.hexdigest()[:16]}


def translation_fingerprint(
    *,
    model_hash: str,
    engine: Any | None,
    config: Any,
    normalizer: Any,
    window: int,
    model_mpp: float,
    slide_mpp: float,
) -> dict[str, Any]:
    """The fingerprint of a translation (see the module doc).

    ``engine`` None gives the *requested* engine fields (``backend`` may be ``"auto"``), used to
    decide whether a finished folder satisfies a request before building an engine.
    """
    forced = getattr(config, "device_path", None)  # translation/device_path.py: torch-op numerics
    if engine is not None:
        device_path: Any = (bool(forced) if forced is not None else
                            not str(getattr(engine, "device", "cpu")).startswith("cpu"))
        backend = str(getattr(engine, "name", config.backend))
        precision = str(getattr(engine, "precision", config.precision))
        device = str(getattr(engine, "device", config.device or "")).split(":")[0]
    else:
        device_path = bool(forced) if forced is not None else "auto"
        backend, precision = config.backend, config.precision
        device = (config.device or "auto").split(":")[0]
    return {
        "output_format": OUTPUT_FORMAT,
        "model_hash": str(model_hash),
        "backend": backend,
        "precision": precision,
        "device": device,
        "device_path": device_path,
        "engine_options": {str(k): repr(v) for k, v in sorted(dict(config.engine_options).items())},
        **normalizer_fingerprint(normalizer),
        "tile_size": int(config.tile_size),
        "overlap": int(config.overlap),
        "min_tissue": float(config.min_tissue),
        "window": int(window),
        "model_mpp": float(model_mpp),
        "output_mpp": float(config.output_mpp),
        "slide_mpp": float(slide_mpp),
    }


def fingerprint_diff(
    recorded: Mapping[str, Any] | None, wanted: Mapping[str, Any], *, requested: bool = False
) -> list[str]:
    """Names of the fields in which ``recorded`` differs from ``wanted`` (sorted).

    ``recorded`` None (an output written before fingerprints existed) differs in every field.
    With ``requested`` (``wanted`` from :func:`translation_fingerprint` without an engine), an
    ``"auto"`` backend or device accepts whatever was recorded.
    """
    if not recorded:
        return sorted(wanted)
    norm = json.loads(json.dumps(dict(recorded)))
    want = json.loads(json.dumps(dict(wanted)))
    out = []
    for key in sorted(set(norm) | set(want)):
        if requested and key in ("backend", "device", "device_path") and want.get(key) == "auto":
            continue
        if norm.get(key) != want.get(key):
            out.append(key)
    return out


def format_diff(recorded: Mapping[str, Any] | None, wanted: Mapping[str, Any],
                fields: list[str]) -> str:
    """``"model_hash ('ab12…' -> 'cd34…'), overlap (0 -> 16)"`` for a warning."""
    if not recorded:
        return "no fingerprint recorded (written by an older virtime)"

    def short(v: Any) -> str:
        s = repr(v)
        return s if len(s) <= 20 else s[:18] + "…'"

    return ", ".join(f"{k} ({short(recorded.get(k))} -> {short(wanted.get(k))})" for k in fields)
