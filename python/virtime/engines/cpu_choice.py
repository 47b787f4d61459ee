"""``backend="auto"`` on a CPU: the fastest installed engine for this model, measured once.

Which CPU engine is fastest depends on the CPU (AVX2 or AVX-512, VNNI, AMX), the model (a UNet++
of convolutions or a ViT) and the library versions, so it is measured rather than tabled: on the
first use of a model on a machine each candidate engine is built and timed on a few windows,
interleaved (so a busy machine slows them alike), and the fastest is kept. The choice is cached in
``<cache>/auto/<key>.json``, keyed by this machine (host name, CPU model, usable cores), the
candidates' library versions, the model's hash, window and precision; later runs read it and
measure nothing. The log says what was chosen and the measured windows/s behind it.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import platform
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from virtime.errors import BackendUnavailableError

__all__ = ["choice_key", "measure_windows_per_second", "measured_cpu_engine"]

logger = logging.getLogger(__name__)

#: Windows per timed call and timed rounds per engine: a few seconds for the official GigaTIME.
MEASURE_WINDOWS = 2
MEASURE_ROUNDS = 2

_DISTRIBUTIONS = {"onnxruntime": "onnxruntime", "openvino": "openvino", "torch": "torch"}


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(backend: str) -> str:
    try:
        return importlib.metadata.version(_DISTRIBUTIONS.get(backend, backend))
    except importlib.metadata.PackageNotFoundError:
        return "?"


def choice_key(model_hash: str, candidates: Sequence[str], *, window: int, precision: str,
               threads: int) -> dict[str, Any]:
    """What a cached choice is valid for: this machine, the engines' versions and the model."""
    return {
        "host": platform.node(),
        "cpu": _cpu_model(),
        "threads": int(threads),
        "engines": {name: _version(name) for name in sorted(candidates)},
        "model_sha256": model_hash,
        "window": int(window),
        "precision": precision,
    }


def measure_windows_per_second(engines: dict[str, Any], window: int,
                               rounds: int = MEASURE_ROUNDS) -> dict[str, float]:
    """Best-of-``rounds`` windows/s of each engine on :data:`MEASURE_WINDOWS` random windows,
    the engines interleaved round by round after one warm-up call each."""
    x = np.random.default_rng(0).standard_normal(
        (MEASURE_WINDOWS, 3, window, window)).astype(np.float32)
    for engine in engines.values():
        engine.run(x[:1])  # warm-up: kernels, plans, first allocations
    best = dict.fromkeys(engines, 0.0)
    for _ in range(rounds):
        for name, engine in engines.items():
            t0 = time.perf_counter()
            engine.run(x)
            best[name] = max(best[name], len(x) / max(time.perf_counter() - t0, 1e-9))
    return best


def measured_cpu_engine(
    model_or_onnx: Any,
    candidates: Sequence[str],
    build: Callable[[str], Any],
    *,
    cache_dir: Path,
    window: int,
    precision: str,
    threads: int,
    measure: Callable[[dict[str, Any], int], dict[str, float]] = measure_windows_per_second,
) -> Any:
    """The engine of the fastest of ``candidates`` for ``model_or_onnx`` on this CPU.

    ``build(name)`` makes one candidate's engine (BackendUnavailableError / ImportError: not
    installed, skipped). A cached choice for this machine and model is used without measuring;
    otherwise every buildable candidate is measured with ``measure`` and the choice stored.
    """
    from virtime.engines.hashing import model_hash

    key = choice_key(model_hash(model_or_onnx), candidates, window=window, precision=precision,
                     threads=threads)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    path = cache_dir / "auto" / f"{digest}.json"
    cached = _read_choice(path, key)
    if cached is not None and cached["backend"] in candidates:
        try:
            engine = build(cached["backend"])
        except (BackendUnavailableError, ImportError) as exc:
            logger.warning("cached auto choice %s is unusable (%s); measuring again",
                           cached["backend"], exc)
        else:
            logger.info("backend auto -> %s: fastest on this CPU for this model when measured on "
                        "%s (%s; cached in %s)", cached["backend"], cached["measured"],
                        _rates(cached["windows_per_s"]), path)
            return engine
    engines: dict[str, Any] = {}
    for name in candidates:
        try:
            engines[name] = build(name)
        except (BackendUnavailableError, ImportError) as exc:
            logger.info("backend auto: %s is not usable here (%s)", name, exc)
    if not engines:
        raise BackendUnavailableError("no CPU inference backend is usable: "
                                      + ", ".join(candidates))
    if len(engines) == 1:
        return next(iter(engines.values()))
    rates = measure(engines, window)
    chosen = max(rates, key=lambda n: rates[n])
    for name, engine in engines.items():
        if name != chosen:
            engine.close()
    record = {"backend": chosen, "windows_per_s": rates, "key": key,
              "measured": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    from virtime.io import atomic_write_json

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, record)
    except OSError as exc:  # a read-only cache: the choice stands, it is just measured next time
        logger.warning("could not cache the auto backend choice in %s (%s)", path, exc)
    logger.info("backend auto -> %s: fastest on this CPU for this model in a short measurement "
                "(%s; cached in %s)", chosen, _rates(rates), path)
    return engines[chosen]


def _rates(rates: dict[str, float]) -> str:
    return ", ".join(f"{n} {r:.3g} windows/s" for n, r in sorted(rates.items(),
                                                                 key=lambda kv: -kv[1]))


def _read_choice(path: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        logger.warning("unreadable auto-choice cache %s (%s); measuring again", path, exc)
        return None
    if not isinstance(record, dict) or record.get("key") != key or not isinstance(
            record.get("windows_per_s"), dict):
        return None
    return record
