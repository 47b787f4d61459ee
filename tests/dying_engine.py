"""An engine wrapper that dies after a number of calls, like a run killed mid-slide.

Shared by the interruption tests (translate, safety, device path, failed tiles); importable from
any test because tests/conftest.py puts this folder on ``sys.path``.
"""

from __future__ import annotations

from typing import Any


class Interrupt(Exception):
    """What a :class:`DyingEngine` raises: stands for a kill in the middle of a slide."""


class DyingEngine:
    """Wraps ``engine``; the ``calls + 1``-th counted call raises :class:`Interrupt`.

    ``method`` is the entry point that counts (``run`` for the host loop, ``run_tensor`` for the
    device path); calls on fewer than ``min_batch`` windows (the memory-budget probes run one or
    two) are not counted. Everything else is the wrapped engine's.
    """

    def __init__(self, engine: Any, calls: int, *, method: str = "run", min_batch: int = 0) -> None:
        self.engine, self.calls = engine, calls
        self.method, self.min_batch = method, min_batch
        self.name, self.precision, self.device = engine.name, engine.precision, engine.device

    def _count(self, method: str, n: int) -> None:
        if method == self.method and n >= self.min_batch:
            self.calls -= 1
            if self.calls < 0:
                raise Interrupt

    def run(self, batch: Any) -> Any:
        self._count("run", len(batch))
        return self.engine.run(batch)

    def run_tensor(self, x: Any) -> Any:
        self._count("run_tensor", len(x))
        return self.engine.run_tensor(x)

    def close(self) -> None:
        self.engine.close()

    def __getattr__(self, name: str) -> Any:  # max_batch, input_dtype, the probe's cache ...
        return getattr(self.engine, name)
