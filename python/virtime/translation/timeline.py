"""Per-stage timeline of the translation loop: busy seconds of each stage and how much they overlap.

Host stages are timed with ``perf_counter`` intervals; device stages on CUDA with events recorded on
the stage's stream (no synchronization: the events are read once, at :meth:`Timeline.summary`, after
the loop's last result was consumed), placed on the host clock relative to one base event. On CPU
every stage is a host interval. ``overlap_s`` is the busy time that ran concurrently with another
stage (sum of busy seconds minus their union), so a user sees which stage bounds the run.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

__all__ = ["STAGES", "Timeline", "cpu_timeline"]

#: Stages in loop order.
STAGES: tuple[str, ...] = ("read", "upload", "compute", "postprocess", "download", "write")


def _union(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for a, b in sorted(intervals):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


class Timeline:
    """Collects stage intervals; ``device`` is a torch device (CUDA events) or None (host only)."""

    def __init__(self, device: Any = None) -> None:
        self._t0 = time.perf_counter()
        self._host: dict[str, list[tuple[float, float]]] = {s: [] for s in STAGES}
        self._events: list[tuple[str, Any, Any]] = []
        self._cuda = device is not None and getattr(device, "type", "cpu") == "cuda"
        self._base: Any = None
        self.extra: dict[str, float] = {}
        if self._cuda:
            import torch

            self._torch = torch
            self._base = torch.cuda.Event(enable_timing=True)
            self._base.record(torch.cuda.current_stream(device))
            self._base_host = time.perf_counter() - self._t0

    @contextlib.contextmanager
    def host(self, stage: str) -> Iterator[None]:
        """Time a host stage."""
        t = time.perf_counter()
        try:
            yield
        finally:
            self._host[stage].append((t - self._t0, time.perf_counter() - self._t0))

    @contextlib.contextmanager
    def span(self, stage: str, stream: Any = None) -> Iterator[None]:
        """Time a device stage: CUDA events on ``stream`` on a GPU, a host interval otherwise."""
        if not self._cuda or stream is None:
            with self.host(stage):
                yield
            return
        torch = self._torch
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record(stream)
        try:
            yield
        finally:
            end.record(stream)
            self._events.append((stage, start, end))

    def add_busy(self, name: str, seconds: float) -> None:
        """Busy seconds measured elsewhere (e.g. the batcher's worker threads)."""
        self.extra[name] = self.extra.get(name, 0.0) + float(seconds)

    def intervals(self) -> dict[str, list[tuple[float, float]]]:
        out = {s: list(v) for s, v in self._host.items()}
        for stage, start, end in self._events:
            end.synchronize()  # only here, after the loop: the results were consumed already
            a = self._base_host + self._base.elapsed_time(start) / 1e3
            out[stage].append((a, a + start.elapsed_time(end) / 1e3))
        return out

    def summary(self, wall: float | None = None) -> dict[str, Any]:
        """``{"wall_s", "stages": {stage: {"busy_s", "share"}}, "busy_sum_s", "overlap_s",
        "bound_by", "clock", ...}`` (JSON-ready)."""
        iv = self.intervals()
        wall = float(wall if wall is not None else time.perf_counter() - self._t0)
        busy = {s: sum(b - a for a, b in v) for s, v in iv.items()}
        every = [x for v in iv.values() for x in v]
        total = sum(busy.values())
        union = _union(every)
        out: dict[str, Any] = {
            "wall_s": round(wall, 4),
            "clock": "cuda events + host" if self._cuda else "host",
            "stages": {s: {"busy_s": round(busy[s], 4),
                           "share": round(busy[s] / wall, 4) if wall > 0 else 0.0}
                       for s in STAGES},
            "busy_sum_s": round(total, 4),
            "busy_union_s": round(union, 4),
            "overlap_s": round(max(total - union, 0.0), 4),
            "bound_by": max(STAGES, key=lambda s: busy[s]) if total > 0 else None,
        }
        for k, v in self.extra.items():
            out[k] = round(v, 4)
        return out


def cpu_timeline(timings: dict[str, Any]) -> dict[str, Any]:
    """The CPU path's timeline from its sequential timings (stages there do not overlap, except
    that the batcher's worker threads read ahead: ``read_workers_busy_s``)."""
    wall = float(timings.get("tile_loop_wall", 0.0))
    busy = {"read": 0.0, "upload": 0.0, "compute": float(timings.get("engine", 0.0)),
            "postprocess": float(timings.get("postprocess", 0.0)), "download": 0.0,
            "write": float(timings.get("write", 0.0))}
    total = sum(busy.values())
    return {
        "wall_s": round(wall, 4),
        "clock": "host (CPU path: stages run one after another)",
        "stages": {s: {"busy_s": round(busy[s], 4),
                       "share": round(busy[s] / wall, 4) if wall > 0 else 0.0} for s in STAGES},
        "busy_sum_s": round(total, 4),
        "busy_union_s": round(total, 4),
        "overlap_s": 0.0,
        "bound_by": max(STAGES, key=lambda s: busy[s]) if total > 0 else None,
        "read_workers_busy_s": round(float(timings.get("read_cpu", 0.0))
                                     + float(timings.get("normalize_cpu", 0.0))
                                     + float(timings.get("pack_cpu", 0.0)), 4),
    }
