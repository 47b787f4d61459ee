"""Memory budget: batch sizes chosen from the model's measured activation size, not fixed numbers.

A translation holds, at its peak, the process's resident base (libraries, weights), the engine's
working memory for one call (``fixed + window_batch x per_window``) and the host buffers of the
tile batches in flight (the batcher's prefetched float32 tiles, the stacked windows and the
float32 logits of a batch). The activation cost is *measured*, not guessed: one probe call at
batch 1 and one at batch 2 on the real engine, each bracketed by a reset of the kernel's
high-water mark of this process's resident memory (``/proc/self/clear_refs``), so it counts what
ONNX Runtime, oneDNN or torch really allocate (im2col buffers, arenas, the output array). Where
the high-water mark cannot be reset, a sampling thread reads the resident size instead.

:func:`plan_batches` then picks the largest window batch (and a tile batch that fills it) within
the budget, never above the configured batch sizes. Batch sizes do not change the outputs, only
how many windows one engine call sees.
"""

from __future__ import annotations

import ctypes
import logging
import math
import os
import re
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from virtime.errors import InvalidArgumentError

__all__ = [
    "BatchPlan",
    "WindowCost",
    "current_rss",
    "default_memory_budget",
    "fit_memory_budget",
    "measure_window_cost",
    "parse_bytes",
    "plan_batches",
    "tile_host_bytes",
    "total_memory",
]

logger = logging.getLogger(__name__)

GIB = 1 << 30
#: The default budget is a quarter of the machine's memory, at most this.
MAX_DEFAULT_BUDGET = 4 * GIB
#: Share of the budget kept free for what the plan does not model (allocator slack, the canvas's
#: band buffers, thread stacks): measured peaks ran up to 5 % above the estimate without it.
HEADROOM = 0.10

_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
    "t": 1000**4, "tb": 1000**4,
    "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
}


def parse_bytes(text: str | int | float) -> int:
    """Bytes from ``"2GiB"``, ``"512MiB"``, ``"1.5GB"``, ``"3e9"`` or a number.

    SI suffixes (kB, MB, GB) are powers of 1000, binary ones (KiB, MiB, GiB) of 1024.
    """
    if isinstance(text, (int, float)):
        value, unit = float(text), ""
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*", str(text))
        if m is None or m.group(2).lower() not in _UNITS:
            raise InvalidArgumentError(
                f"not a memory size: {text!r} (use e.g. 2GiB, 512MiB, 1.5GB or a byte count)"
            )
        value, unit = float(m.group(1)), m.group(2).lower()
    n = int(value * _UNITS[unit])
    if n <= 0:
        raise InvalidArgumentError(f"memory size must be positive, got {text!r}")
    return n


def total_memory() -> int:
    """Physical memory of the machine, or the cgroup limit of this container when lower."""
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as fh:
                text = fh.read().strip()
        except OSError:
            continue
        if text.isdigit() and 0 < int(text) < total:
            total = int(text)
    return int(total)


def default_memory_budget() -> int:
    """A quarter of :func:`total_memory`, at most 4 GiB."""
    return int(min(total_memory() // 4, MAX_DEFAULT_BUDGET))


def current_rss() -> int:
    """Resident set size of this process in bytes (0 where /proc is unavailable)."""
    return _status_kib("VmRSS") * 1024


def _status_kib(field: str) -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _trim_heap() -> None:
    """Give freed heap pages back to the kernel (glibc), so a probe starts from a low RSS."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def _peak_during(fn: Any) -> int:
    """Peak resident bytes above the starting RSS while ``fn()`` runs."""
    _trim_heap()
    start = current_rss()
    if _reset_peak() and _status_kib("VmHWM"):
        fn()
        return max(0, _status_kib("VmHWM") * 1024 - start)
    peak = [start]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], current_rss())
            time.sleep(0.001)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        fn()
    finally:
        done.set()
        t.join()
    return max(0, max(peak[0], current_rss()) - start)


@dataclass(frozen=True)
class WindowCost:
    """Measured memory of one engine call: ``fixed + n x per_window`` bytes for ``n`` windows."""

    per_window: int
    fixed: int
    window: int

    def call_bytes(self, n: int) -> int:
        return int(self.fixed + n * self.per_window)


def measure_window_cost(engine: Any, window: int) -> WindowCost:
    """Probe ``engine`` at batch 1 and 2 (after a warm-up call) and fit ``fixed + n x per_window``.

    The result is kept on the engine, so an engine reused across slides is probed once. The
    per-window cost is at least the float32 logits the call returns (an engine that reuses freed
    memory could otherwise look free).
    """
    cached = getattr(engine, "_virtime_window_cost", None)
    if isinstance(cached, WindowCost) and cached.window == window:
        return cached
    dtype = getattr(engine, "input_dtype", np.float32)
    x = np.zeros((2, 3, window, window), dtype=dtype)
    engine.run(x[:1])  # warm-up: first calls allocate kernels, caches and plans
    one = _peak_during(lambda: engine.run(x[:1]))
    two = _peak_during(lambda: engine.run(x))
    out_channels = int(getattr(engine, "out_channels", None) or 23)
    floor = out_channels * window * window * 4
    per = max(two - one, floor, two // 2 if two > one else 0)
    cost = WindowCost(per_window=int(per), fixed=int(max(0, one - per)), window=int(window))
    logger.info("measured engine memory: %.1f MiB per %d-px window + %.1f MiB per call",
                cost.per_window / 2**20, window, cost.fixed / 2**20)
    try:
        engine._virtime_window_cost = cost
    except AttributeError:  # an engine with __slots__: measure again next time
        pass
    return cost


@dataclass(frozen=True)
class BatchPlan:
    """Batch sizes chosen for a memory budget, and the estimate behind them (bytes)."""

    tile_batch: int
    window_batch: int
    budget: int
    base: int
    engine_bytes: int
    host_bytes: int
    fits: bool

    @property
    def estimated_peak(self) -> int:
        return self.base + self.engine_bytes + self.host_bytes

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["estimated_peak"] = self.estimated_peak
        return d


def tile_host_bytes(tile_size: int, window: int, windows_per_tile: int, *, out_channels: int = 23,
                    prefetch: int = 4, emit_uint8: bool = False) -> int:
    """Host bytes one tile of a batch holds: the prefetched and current float32 tiles, its
    stacked windows and their float32 logits."""
    tensor = 3 * tile_size * tile_size * 4
    rgb = 3 * tile_size * tile_size if emit_uint8 else 0
    windows = windows_per_tile * 3 * window * window * 4
    logits = windows_per_tile * out_channels * window * window * 4
    return int((prefetch + 1) * (tensor + rgb) + windows + logits)


def plan_batches(
    cost: WindowCost,
    *,
    budget: int,
    tile_size: int,
    windows_per_tile: int,
    max_tile_batch: int,
    max_window_batch: int,
    base: int | None = None,
    out_channels: int = 23,
    prefetch: int = 4,
    emit_uint8: bool = False,
) -> BatchPlan:
    """The largest window batch (at most ``max_window_batch``) whose estimated peak fits
    ``budget``, with the tile batch that fills it (at most ``max_tile_batch``).

    ``base`` is the resident memory outside the batches (default: this process's RSS now). When
    even one window does not fit, the plan is batch 1 with ``fits=False`` (the caller warns).
    """
    if budget <= 0:
        raise InvalidArgumentError(f"memory budget must be positive, got {budget}")
    base = current_rss() if base is None else int(base)
    k = max(1, int(windows_per_tile))
    per_tile = tile_host_bytes(tile_size, cost.window, k, out_channels=out_channels,
                               prefetch=prefetch, emit_uint8=emit_uint8)
    # Logits of the batch are counted in per_tile; the engine's own output array in the call.
    for wb in range(max(1, int(max_window_batch)), 0, -1):
        tb = min(max(1, int(max_tile_batch)), math.ceil(wb / k))
        wb_eff = min(wb, tb * k)  # an engine call never sees more windows than a batch holds
        engine_bytes = cost.call_bytes(wb_eff)
        host = tb * per_tile
        if base + engine_bytes + host <= budget:
            return BatchPlan(tb, wb_eff, int(budget), base, engine_bytes, host, True)
    return BatchPlan(1, 1, int(budget), base, cost.call_bytes(1), per_tile, False)


def fit_memory_budget(engine: Any, config: Any, *, window: int, windows_per_tile: int,
                      emit_uint8: bool = False) -> Any:
    """``config`` with ``batch_size`` / ``window_batch`` chosen for ``config.memory_budget``.

    Measures ``engine`` (once per engine), plans with :func:`plan_batches` from this process's
    current RSS and lowers ``engine.max_batch`` to the chosen window batch. The configured batch
    sizes are upper bounds; outputs do not depend on them. A budget below what one window needs
    is a warning, and the run goes on at batch 1.
    """
    import dataclasses

    budget = int(config.memory_budget) if config.memory_budget else default_memory_budget()
    cost = measure_window_cost(engine, window)
    plan = plan_batches(
        cost, budget=int(budget * (1.0 - HEADROOM)), tile_size=int(config.tile_size), windows_per_tile=windows_per_tile,
        max_tile_batch=int(config.batch_size),
        max_window_batch=min(int(config.window_batch), int(getattr(engine, "max_batch", 1 << 30))),
        emit_uint8=emit_uint8,
    )
    mib = 2**20
    if not plan.fits:
        logger.warning(
            "memory budget %.0f MiB is below what one window needs (about %.0f MiB: %.0f MiB "
            "resident, %.0f MiB per engine call, %.0f MiB per tile); going on at batch 1",
            budget / mib, plan.estimated_peak / mib, plan.base / mib, plan.engine_bytes / mib,
            plan.host_bytes / mib,
        )
    elif (plan.tile_batch, plan.window_batch) != (config.batch_size, config.window_batch):
        logger.info(
            "memory budget %.0f MiB: %d tiles per batch, %d windows per engine call (estimated "
            "peak %.0f MiB)", budget / mib, plan.tile_batch, plan.window_batch,
            plan.estimated_peak / mib,
        )
    if getattr(engine, "max_batch", None) is not None and plan.window_batch < engine.max_batch:
        engine.max_batch = plan.window_batch
        hook = getattr(engine, "_on_batch_change", None)
        if hook is not None:
            hook()  # engines with per-batch state (CUDA graphs) rebuild it
    return dataclasses.replace(config, batch_size=plan.tile_batch, window_batch=plan.window_batch)
