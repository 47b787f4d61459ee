"""How a model runs: the engine settings that translation and embedding share."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["EngineConfig"]


@dataclass(frozen=True)
class EngineConfig:
    """Engine and batcher settings (none changes the numbers except backend, precision, device,
    ``engine_options`` and ``device_path``; see :mod:`virtime.translation.fingerprint`).

    ``batch_size``: tiles per batch from the C++ batcher; ``window_batch``: windows per engine
    call; ``threads``: batcher threads (0: all cores); ``memory_budget``: peak bytes the batch
    sizes are chosen to fit (:mod:`virtime.engines.memory`; None: a quarter of RAM, at most
    4 GiB; the two batch sizes are then upper bounds); ``device_path`` (translation only): None
    = post-process on the engine's device when it is not the CPU, True forces it, False keeps
    the fused C++ CPU path.
    """

    backend: str = "auto"
    precision: str = "fp32"
    device: str | None = None
    batch_size: int = 8
    window_batch: int = 32
    threads: int = 0
    cache_dir: str | None = None
    engine_options: dict[str, Any] = field(default_factory=dict)
    memory_budget: int | None = None
    device_path: bool | None = None
