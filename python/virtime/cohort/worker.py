"""What runs on a Dask worker: one slide per task, with the model and engine kept across slides.

Tasks receive the weights *path*, never the model: each worker process loads the model and builds
its engine once (:func:`cached_engine`, keyed by weights file, backend, precision and device) and
reuses them for every later slide. A worker with ``K`` GPUs hands each running task its own device
through a small pool of device slots. :class:`CohortWorkerPlugin` warms the next slide queued on
the worker (reads its file into the OS page cache) while the current one runs, and closes the
cached engines when the worker shuts down.

Failure policy: a :class:`~virtime.errors.VirtimeError` (missing file, not a slide, no mpp ...) is
deterministic, so the task *returns* a failed record and Dask does not retry it; any other
exception propagates, so Dask retries the slide (``retries=``), and a worker that dies mid-slide
makes the scheduler reschedule it elsewhere (``allowed-failures``). A retried slide resumes from
its last finished canvas band.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from distributed import WorkerPlugin

from virtime.errors import VirtimeError

__all__ = [
    "SLIDE_KEY_PREFIX",
    "CohortWorkerPlugin",
    "attempts_path",
    "cached_engine",
    "clear_engine_cache",
    "count_attempts",
    "prefetched_slides",
    "translate_slide_task",
]

log = logging.getLogger(__name__)

#: First element of every slide task's key: ``(prefix, run_id, slide_id, path)``.
SLIDE_KEY_PREFIX = "virtime-slide"
ATTEMPTS_DIR = ".cohort_attempts"

# Per-process caches (a worker process is the unit that owns an engine).
_LOCK = threading.Lock()
_ENGINES: dict[tuple[Any, ...], tuple[Any, Any]] = {}
_SLOTS: dict[int, queue.Queue[int]] = {}
_PREFETCHED: list[str] = []


def attempts_path(out_root: str | os.PathLike[str], slide_id: str) -> Path:
    """Where a slide's attempts are counted (one line per start: ``run_id``)."""
    return Path(out_root) / ATTEMPTS_DIR / f"{slide_id}.txt"


def count_attempts(out_root: str | os.PathLike[str], slide_id: str, run_id: str) -> int:
    """How many times this run started the slide (retries and worker deaths included)."""
    path = attempts_path(out_root, slide_id)
    if not path.is_file():
        return 0
    return sum(1 for line in path.read_text().splitlines() if line.strip() == run_id)


def _note_attempt(out_root: str, slide_id: str, run_id: str) -> int:
    path = attempts_path(out_root, slide_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:  # O_APPEND: one short line is written whole
        fh.write(run_id + "\n")
    return count_attempts(out_root, slide_id, run_id)


def _engine_key(weights: str | None, config: Any, device: str | None) -> tuple[Any, ...]:
    if weights is None:
        ident: tuple[Any, ...] = ("demo",)
    else:
        st = os.stat(weights)
        ident = (os.path.realpath(weights), st.st_mtime_ns, st.st_size)
    return (*ident, config.backend, config.precision, device, config.window_batch,
            config.cache_dir, tuple(sorted((k, repr(v)) for k, v in config.engine_options.items())))


def cached_engine(weights: str | None, config: Any, device: str | None) -> tuple[Any, Any, bool]:
    """``(model, engine, was_cached)`` for this process, loading and building only once.

    Parameters
    ----------
    weights
        Translator weights path; ``None`` for the bundled demo model.
    config
        The :class:`~virtime.translation.TranslateConfig` (backend, precision, batch, options).
    device
        The device this engine runs on (``None``: the backend's default).
    """
    from virtime.engines import create_engine
    from virtime.models import load, load_demo

    key = _engine_key(weights, config, device)
    with _LOCK:
        hit = _ENGINES.get(key)
        if hit is not None:
            return hit[0], hit[1], True
        model: Any = load_demo() if weights is None else load(weights)
        engine = create_engine(model, backend=config.backend, precision=config.precision,
                               device=device, cache_dir=config.cache_dir,
                               max_batch=config.window_batch,
                               window=int(model.card.window),
                               **config.engine_options)
        _ENGINES[key] = (model, engine)
        log.info("worker %d: built %s engine for %s on %s", os.getpid(),
                 getattr(engine, "name", "?"), weights or "demo model", device or "default device")
        return model, engine, False


def clear_engine_cache() -> None:
    """Closes and forgets this process's cached engines (worker teardown)."""
    with _LOCK:
        for _, engine in _ENGINES.values():
            with contextlib.suppress(Exception):
                engine.close()
        _ENGINES.clear()


@contextlib.contextmanager
def _device_slot(gpus_per_worker: int) -> Iterator[int]:
    """A device index for this task: one of ``gpus_per_worker`` GPUs, or a CPU thread slot."""
    size = gpus_per_worker if gpus_per_worker > 0 else _worker_threads()
    with _LOCK:
        pool = _SLOTS.get(size)
        if pool is None:
            pool = _SLOTS[size] = queue.Queue()
            for i in range(size):
                pool.put(i)
    slot = pool.get()
    try:
        yield slot
    finally:
        pool.put(slot)


def _worker_threads() -> int:
    try:
        from distributed import get_worker

        return max(1, int(get_worker().state.nthreads))
    except (ValueError, AttributeError):
        return 1


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except ValueError:
        return f"{socket.gethostname()}:{os.getpid()}"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 500 else text[:497] + "..."


def translate_slide_task(
    slide_path: str,
    slide_id: str,
    out_root: str,
    weights: str | None,
    config: Any,
    run_id: str,
    gpus_per_worker: int = 0,
) -> dict[str, Any]:
    """Translates one slide (and its features) into ``out_root/<slide_id>/`` on a worker.

    Returns a ledger record: ``status`` ``done`` / ``skipped`` / ``failed`` (deterministic
    errors only, with ``reason``), timings, tile counts, worker address, attempt number and
    whether the engine came from the worker's cache. Other errors are raised for Dask to retry.
    """
    from virtime.features.table import FEATURES_FILE
    from virtime.translation import is_translated, slide_output_dir, translate

    started = time.time()
    attempt = _note_attempt(out_root, slide_id, run_id)
    record: dict[str, Any] = {"slide_id": slide_id, "worker": _worker_name(), "attempts": attempt,
                              "started": started, "engine_cached": False}
    try:
        with _device_slot(gpus_per_worker) as slot:
            device = f"cuda:{slot}" if gpus_per_worker > 0 else config.device
            model, engine, cached = cached_engine(weights, config, device)
            record["engine_cached"] = cached
            cfg = dataclasses.replace(config, device=device, show_progress=False, log_json=None)
            result = translate(slide_path, model, out_root, cfg, slide_id=slide_id, engine=engine)
            out = slide_output_dir(out_root, slide_id)
            if result.skipped and cfg.features and not (out / FEATURES_FILE).is_file():
                from virtime.features import features_from_outputs

                features_from_outputs(out)
    except VirtimeError as exc:  # deterministic: retrying cannot help
        log.warning("%s: %s", slide_id, exc)
        return {**record, "status": "failed", "reason": f"{type(exc).__name__}: {_one_line(exc)}",
                "finished": time.time(), "seconds": time.time() - started}
    summary = result.record if result.record else {}
    if not is_translated(out):  # translate returned but left no done marker: a bug, say so
        raise RuntimeError(f"{slide_id}: translate returned without a finished summary in {out}")
    finished = time.time()
    return {**record, "status": "skipped" if result.skipped else "done", "reason": "",
            "finished": finished, "seconds": finished - started,
            "translate_seconds": float(summary.get("seconds", result.seconds)),
            "tiles_done": int(summary.get("tiles_done", result.tiles_done)),
            "tiles_failed": int(summary.get("tiles_failed", result.tiles_failed))}


def prefetched_slides() -> list[str]:
    """Slide ids this process prefetched (for tests and diagnostics)."""
    with _LOCK:
        return list(_PREFETCHED)


def _prefetch_file(path: str, slide_id: str, max_bytes: int) -> None:
    """Reads a slide file into the page cache so the next task starts on warm data."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # a missing file fails in its own task, with its own reason
    try:
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
        left = max_bytes
        while left > 0:
            chunk = os.read(fd, min(8 << 20, left))
            if not chunk:
                break
            left -= len(chunk)
    except OSError as exc:
        log.debug("prefetch of %s stopped: %s", path, exc)
    finally:
        os.close(fd)
    with _LOCK:
        _PREFETCHED.append(slide_id)


class CohortWorkerPlugin(WorkerPlugin):
    """Prefetches queued slides and closes cached engines at teardown.

    A slide task whose key reaches the worker's ``ready`` queue (it will run after the current
    one: Dask sends each worker a little more work than it has threads) has its file read in a
    background thread, one prefetch at a time per worker.
    """

    name = "virtime-cohort"
    idempotent = True  # a second run on the same cluster keeps the workers' warm engines

    def __init__(self, prefetch_bytes: int = 1 << 30) -> None:
        self.prefetch_bytes = int(prefetch_bytes)
        self._busy: threading.Lock | None = None

    def setup(self, worker: Any) -> None:
        self._busy = threading.Lock()

    def teardown(self, worker: Any) -> None:
        clear_engine_cache()

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        if (self.prefetch_bytes <= 0 or finish not in ("ready", "constrained")
                or not isinstance(key, tuple) or len(key) != 4 or key[0] != SLIDE_KEY_PREFIX):
            return
        busy = self._busy
        if busy is None or not busy.acquire(blocking=False):
            return
        _, _, slide_id, path = key

        def run() -> None:
            try:
                _prefetch_file(str(path), str(slide_id), self.prefetch_bytes)
            finally:
                busy.release()

        threading.Thread(target=run, name=f"virtime-prefetch-{slide_id}", daemon=True).start()
