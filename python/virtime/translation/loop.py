"""The tile loop of a translation: one loop, over a batch step that does the tensor work.

:func:`run_tile_loop` reads a slide's batches of tiles and, per batch, keeps the books: stage
timings, failed tiles (recorded, and marked in the tile rows so a resume counts them), the cell
collector told of failures, tile embeddings, tile rows (appended to the journal before any band
is written), the canvas bands no later tile reaches, and progress (bar and JSON-lines events).

What happens to a batch's pixels is the :class:`BatchStep`'s: :class:`HostBatchStep` packs float
windows on the CPU and runs the fused C++ post-processing (here);
:class:`~virtime.translation.device_path.DeviceBatchStep` uploads uint8 tiles and post-processes
on the engine's device, with ``depth`` batches in flight. :func:`batch_step` picks one.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from virtime._progress import progress
from virtime.translation.config import TranslateConfig
from virtime.translation.journal import failure_row, tile_row

__all__ = ["BatchStep", "HostBatchStep", "JsonLog", "batch_step", "run_tile_loop"]


class JsonLog:
    """Machine-readable progress: one JSON object per line (``--log-json``)."""

    def __init__(self, path: str | None) -> None:
        self._fh = open(path, "a", encoding="utf-8") if path else None  # noqa: SIM115

    def emit(self, **event: Any) -> None:
        if self._fh:
            self._fh.write(json.dumps({"time": time.time(), **event}) + "\n")
            self._fh.flush()

    def close(self) -> None:
        if self._fh:
            self._fh.close()


class BatchStep(Protocol):
    """The tensor work of the tile loop, batch by batch.

    ``depth``: batches submitted before the oldest one's results are collected (1: at once).
    ``timeline``: a :class:`~virtime.translation.timeline.Timeline` the loop also times its host
    stages on, or None.
    """

    depth: int
    timeline: Any

    def batches(self) -> Iterator[Any]:
        """The slide's batches of the run's to-do tiles, in order."""
        ...

    def submit(self, batch: Any) -> Any:
        """Start a non-empty batch through the engine; returns what :meth:`collect` takes."""
        ...

    def collect(self, batch: Any, ticket: Any) -> tuple[NDArray[Any], NDArray[Any]]:
        """Finish a submitted batch: its predictions added to the canvas (and given to the cell
        collector); returns the tiles' ``(positive_fraction, mean_probability)``, ``(n, C)``."""
        ...

    def close(self, wall: float) -> None:
        """The loop is over (``wall`` seconds): record what the step measured."""
        ...


def _sigmoid(logits: NDArray[Any]) -> NDArray[np.float32]:
    import torch

    return torch.sigmoid(torch.from_numpy(np.asarray(logits, np.float32))).numpy()


class HostBatchStep:
    """The CPU step: float32 windows packed by the batcher, the engine, then the fused C++ pass
    (sigmoid, blend weight, pooling to the canvas grid, blended tile statistics)."""

    depth = 1
    timeline = None

    def __init__(self, run: Any, config: TranslateConfig) -> None:
        from virtime.translation.postprocess import WindowPostprocessor

        self.run, self.config = run, config
        self.window = run.weight.shape[0]
        self.post = WindowPostprocessor(run.weight, run.canvas.factor, run.origins,
                                        config.tile_size, run.stride, threads=config.threads)

    def batches(self) -> Iterator[Any]:
        from virtime.batcher import iter_batches

        run, config = self.run, self.config
        return iter_batches(run.slide, run.grid, normalizer=run.normalizer,
                            batch_size=config.batch_size, threads=config.threads,
                            emit_uint8=run.embedder is not None, pack="float32", tiles=run.todo)

    def submit(self, batch: Any) -> NDArray[Any]:
        window = self.window
        windows = np.stack([batch.tensor[:, :, y : y + window, x : x + window]
                            for x, y in self.run.origins], axis=1)
        n, k = windows.shape[:2]
        return self.run.engine.run(windows.reshape(n * k, *windows.shape[2:]))

    def collect(self, batch: Any, ticket: Any) -> tuple[NDArray[Any], NDArray[Any]]:
        run, logits = self.run, ticket
        canvas, origins, weight, f = run.canvas, run.origins, run.weight, run.canvas.factor
        if run.cells is not None:  # blended tile probabilities, segmented with a halo
            run.cells.add_windows(batch.tile_index, logits, origins, weight)
        res = self.post.process(logits)
        k = len(origins)
        for i, tile in enumerate(batch.tile_index):
            tx, ty = (int(v) for v in run.tile_xy_model[tile])
            for j, (wx, wy) in enumerate(origins):
                if self.post.aligned(tx + wx, ty + wy):
                    canvas.add_pooled(res.wp[i, j], res.ws, (tx + wx) // f, (ty + wy) // f)
                else:  # off the canvas grid: numpy pooling of the zero-padded window
                    canvas.add(_sigmoid(logits[i * k + j]), tx + wx, ty + wy, weight)
        return res.positive_fraction, res.mean_probability

    def close(self, wall: float) -> None:
        pass


def batch_step(run: Any, config: TranslateConfig) -> BatchStep:
    """The device step when the engine runs on a GPU (or ``config.device_path`` forces it), else
    the host step."""
    from virtime.translation import device_path

    if device_path.use_device_path(run.engine, config):
        return device_path.DeviceBatchStep(run, config)
    return HostBatchStep(run, config)


def run_tile_loop(run: Any, step: BatchStep,
                  config: TranslateConfig) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The hot loop of a :class:`~virtime.translation.run.SlideRun` over ``step``: returns the
    run's tile rows (``run.rows``, appended to) and the failed-tile records of this run."""
    return _TileLoop(run, step, config).execute()


class _TileLoop:
    """One run of the loop: the per-batch bookkeeping around the step."""

    def __init__(self, run: Any, step: BatchStep, config: TranslateConfig) -> None:
        self.run, self.step, self.config = run, step, config
        self.timings, self.rows = run.timings, run.rows
        self.failures: list[dict[str, Any]] = []
        self.position = {int(t): i for i, t in enumerate(run.todo)}
        self.done = 0
        tl = step.timeline
        self.span: Callable[[str], Any] = tl.host if tl is not None else \
            (lambda stage: contextlib.nullcontext())

    def execute(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        run, step = self.run, self.step
        self.started = time.perf_counter()
        with progress(total=len(run.todo), desc=f"translate {run.slide_id}", unit="tile",
                      enabled=self.config.show_progress) as self.bar:
            if len(run.todo) == 0:
                step.close(0.0)
                return self.rows, self.failures
            pending: deque[tuple[Any, Any]] = deque()
            for batch in step.batches():
                pending.append((batch, self._take(batch)))
                while len(pending) >= step.depth:
                    self._consume(*pending.popleft())
            while pending:
                self._consume(*pending.popleft())
        step.close(time.perf_counter() - self.started)
        return self.rows, self.failures

    def _take(self, batch: Any) -> Any:
        """A batch just read: its timings, failures and embeddings; submitted (None if empty)."""
        run, timings = self.run, self.timings
        timings["read_cpu"] += batch.read_seconds
        timings["normalize_cpu"] += batch.normalize_seconds
        timings["pack_cpu"] += batch.pack_seconds
        if self.step.timeline is not None:
            self.step.timeline.add_busy("read_workers_busy_s",
                                        batch.read_seconds + batch.normalize_seconds)
        new = [{"tile": f.tile_index, "x": f.x, "y": f.y, "reason": f.reason}
               for f in batch.failures]
        self.failures += new
        if run.cells is not None and new:
            run.cells.fail([f["tile"] for f in new])
        self.rows += [failure_row(f) for f in new]  # in the partial table: a resume counts them
        if not len(batch):
            return None
        if run.embedder is not None:
            t0 = time.perf_counter()
            run.embedder.add(batch.rgb, batch.tile_index)
            timings["embed"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        ticket = self.step.submit(batch)
        timings["engine"] += time.perf_counter() - t0  # on the device: host time to queue it
        return ticket

    def _consume(self, batch: Any, ticket: Any) -> None:
        """A batch's results: canvas and tile rows, then the finished bands and progress."""
        run, timings, rows = self.run, self.timings, self.rows
        if ticket is not None:
            t0 = time.perf_counter()
            pos, mean = self.step.collect(batch, ticket)
            with self.span("write"):
                for i, tile in enumerate(batch.tile_index):
                    rows.append(tile_row(int(tile), run.grid, pos[i], mean[i]))
            timings["postprocess"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        with self.span("write"):
            self._write_finished_bands(batch)
        timings["write"] += time.perf_counter() - t0
        self._report_progress(batch)

    def _write_finished_bands(self, batch: Any) -> None:
        """Journal the rows so far, then write every canvas band that no later tile reaches; the
        journal is fsynced whenever a band is written."""
        run, canvas, todo = self.run, self.run.canvas, self.run.todo
        last = self.position[int(batch.tile_index[-1] if len(batch)
                                 else batch.failures[-1].tile_index)]
        nxt = todo[last + 1] if last + 1 < len(todo) else None
        run.journal.append(self.rows)  # before the bands: a finished band's rows are kept
        if canvas.flush_until(int(run.tile_xy_model[nxt, 1]) if nxt is not None else
                              canvas.shape_yx[0] * canvas.factor):
            run.journal.append(self.rows, sync=True)

    def _report_progress(self, batch: Any) -> None:
        """Progress bar and JSON-lines event after a batch."""
        n = len(batch) + len(batch.failures)
        self.done += n
        self.bar.update(n)
        rate = self.done / max(time.perf_counter() - self.started, 1e-9)
        self.run.jlog.emit(event="progress", slide_id=self.run.slide_id, tiles_done=self.done,
                           tiles_total=len(self.run.todo), tiles_per_s=round(rate, 3))
