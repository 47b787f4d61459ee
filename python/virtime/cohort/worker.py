"""What runs on a Dask worker: one slide per task, with the model and engine kept across slides.

Tasks receive the weights *path*, never the model: each worker process loads the model and builds
its engine once (:func:`cached_engine`, keyed by weights file, backend, precision and device) and
reuses them for every later slide. A worker with ``K`` GPUs hands each running task its own device
through a small pool of device slots. :class:`CohortWorkerPlugin` prepares the next slide queued
on the worker while the current one runs (reads its file into the OS page cache, opens it and
detects its tissue, and, on the device path, reads its first batches of tiles: see
:mod:`virtime.translation.prefetch`), and closes the cached engines when the worker shuts down.
The task of that slide takes what was prepared (``prepared=`` of
:func:`~virtime.translation.run.translate_slide`); a slide whose preparation failed is opened
again by its task, which meets and reports the error itself.

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
import math
import os
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from distributed import WorkerPlugin

from virtime.errors import VirtimeError

__all__ = [
    "SLIDE_KEY_PREFIX",
    "CohortWorkerPlugin",
    "IgnoreInterruptsPlugin",
    "attempts_path",
    "cached_engine",
    "clear_engine_cache",
    "count_attempts",
    "prefetch_log",
    "prefetched_slides",
    "prepared_pending",
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
_BUILT = threading.Condition(_LOCK)  # notified when an engine joins the cache
_PREP_LOCK = threading.Lock()  # guards the two below (never held while waiting for work)
_PREPARED: dict[tuple[str, str], _Ahead] = {}  # (run_id, slide_id) -> its preparation
_PREPARE_LOG: list[dict[str, Any]] = []
#: Most slides prepared ahead at once per worker process (each holds an open slide, its tissue
#: mask and a few batches of uint8 tiles).
MAX_PREPARED = 4


@dataclasses.dataclass
class _Ahead:
    """One slide's preparation on the worker's prefetch thread."""

    future: Future[Any]
    claimed: threading.Event = dataclasses.field(default_factory=threading.Event)


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
    from virtime.models import load, load_demo
    from virtime.translation.request import translation_engine

    key = _engine_key(weights, config, device)
    with _LOCK:
        hit = _ENGINES.get(key)
        if hit is not None:
            return hit[0], hit[1], True
        model: Any = load_demo() if weights is None else load(weights)
        engine = translation_engine(model, config, device)
        _ENGINES[key] = (model, engine)
        _BUILT.notify_all()  # a slide being prepared ahead may read its first batches now
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
    prefetch_bytes: int | None = None,
    prefetch_batches: int | None = None,
) -> dict[str, Any]:
    """Translates one slide (and its features) into ``out_root/<slide_id>/`` on a worker.

    Returns a ledger record: ``status`` ``done`` / ``skipped`` / ``failed`` (deterministic
    errors only, with ``reason``), timings, tile counts, worker address, attempt number,
    whether the engine came from the worker's cache and whether the slide was ``prepared``
    ahead by :class:`CohortWorkerPlugin` (``prefetch_seconds``: the time that took, off the
    critical path). Other errors are raised for Dask to retry. ``prefetch_bytes`` /
    ``prefetch_batches`` are read by the plugin (this run's prefetch settings; None: the
    plugin's own).
    """
    from virtime.translation import is_translated, slide_output_dir
    from virtime.translation.run import translate_slide

    started = time.time()
    attempt = _note_attempt(out_root, slide_id, run_id)
    record: dict[str, Any] = {"slide_id": slide_id, "worker": _worker_name(), "attempts": attempt,
                              "started": started, "engine_cached": False, "prepared": False,
                              "prefetch_seconds": math.nan}
    ahead = _claim(run_id, slide_id)  # a preparation not started yet is dropped: done here
    try:
        with _device_slot(gpus_per_worker) as slot:
            device = f"cuda:{slot}" if gpus_per_worker > 0 else config.device
            model, engine, cached = cached_engine(weights, config, device)
            record["engine_cached"] = cached
            cfg = dataclasses.replace(config, device=device, show_progress=False, log_json=None)
            prepared = _prepared(ahead, slide_id)
            if prepared is not None:
                record.update(prepared=True, prefetch_seconds=float(prepared.seconds))
            result = translate_slide(slide_path, model, out_root, cfg, slide_id=slide_id,
                                     engine=engine, prepared=prepared)
            del prepared
            out = slide_output_dir(out_root, slide_id)  # translate refreshes stale features
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


def prefetch_log() -> list[dict[str, Any]]:
    """What this process prepared ahead: one dict per slide (``slide_id``, ``status``
    ``prepared`` / ``failed`` / ``not needed``, ``read_ahead`` batches, ``error``)."""
    with _PREP_LOCK:
        return [dict(r) for r in _PREPARE_LOG]


def prepared_pending() -> list[str]:
    """Slide ids prepared ahead whose task has not taken them (empty after a run)."""
    with _PREP_LOCK:
        return sorted(sid for _, sid in _PREPARED)


def _claim(run_id: str, slide_id: str) -> _Ahead | None:
    """The task's claim on its slide's preparation; one not started yet is cancelled."""
    with _PREP_LOCK:
        ahead = _PREPARED.pop((run_id, slide_id), None)
    if ahead is None:
        return None
    ahead.claimed.set()  # a preparation still running reads no more batches ahead
    if ahead.future.cancel():
        return None
    return ahead


def _prepared(ahead: _Ahead | None, slide_id: str) -> Any:
    """The prepared slide (waiting for a preparation in progress), or None: translate then opens
    the slide itself and meets any error there (a slide that failed to open fails in its task)."""
    if ahead is None:
        return None
    try:
        return ahead.future.result()
    except Exception as exc:  # noqa: BLE001 - translate raises it again, with the ledger's reason
        log.debug("%s: preparing ahead failed (%s); translate reports it", slide_id, exc)
        return None


def _drop(key: tuple[str, str]) -> None:
    """Forgets a preparation whose task left this worker (stolen, cancelled, released)."""
    with _PREP_LOCK:
        ahead = _PREPARED.pop(key, None)
    if ahead is not None:
        ahead.claimed.set()
        ahead.future.cancel()


def _built_engine(weights: str | None, config: Any, stop: Callable[[], bool],
                  timeout: float = 120.0) -> tuple[Any, Any] | None:
    """``(model, engine)`` from this process's cache for these weights and settings (any device
    slot), waiting up to ``timeout`` s for the running task to build it; None if not there."""
    deadline = time.monotonic() + timeout
    with _BUILT:
        while True:
            for key, hit in _ENGINES.items():
                try:
                    if key == _engine_key(weights, config, key[-4]):
                        return hit
                except OSError:
                    return None
            left = deadline - time.monotonic()
            if left <= 0 or stop():
                return None
            _BUILT.wait(min(left, 0.5))


def _prepare_ahead(path: str, slide_id: str, weights: str | None, config: Any,
                   prefetch_bytes: int, batches: int, stop: Callable[[], bool]) -> Any:
    """The prefetch thread's job for one queued slide: page cache, open + tissue, and (device
    path, engine built) its first ``batches`` batches of tiles. None when its task started
    first (it then does all of this itself)."""
    from virtime.translation.device_path import use_device_path
    from virtime.translation.prefetch import prepare_slide

    t0 = time.perf_counter()
    entry: dict[str, Any] = {"slide_id": slide_id, "status": "not needed", "read_ahead": 0,
                             "error": ""}
    try:
        _prefetch_file(path, slide_id, prefetch_bytes, stop)
        if stop():
            return None
        model = engine = None
        if batches > 0:
            hit = _built_engine(weights, config, stop)
            if hit is not None:
                model, engine = hit
        n = batches if engine is not None and use_device_path(engine, config) else 0
        prepared = prepare_slide(path, config.mpp, model=model, config=config, read_ahead=n,
                                 wanted=lambda: not stop())
        entry.update(status="prepared", read_ahead=prepared.read_ahead)
        return prepared
    except Exception as exc:
        entry.update(status="failed", error=f"{type(exc).__name__}: {_one_line(exc)}")
        raise
    finally:
        entry["seconds"] = time.perf_counter() - t0
        with _PREP_LOCK:
            _PREPARE_LOG.append(entry)


def _prefetch_file(path: str, slide_id: str, max_bytes: int,
                   stop: Callable[[], bool] | None = None) -> None:
    """Reads a slide file into the page cache so the next task starts on warm data."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # a missing file fails in its own task, with its own reason
    try:
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
        left = max_bytes
        while left > 0 and not (stop is not None and stop()):
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


class IgnoreInterruptsPlugin(WorkerPlugin):
    """Workers of virtime's own local cluster ignore SIGINT.

    Ctrl-C in a terminal reaches the whole process group: the driver stops the run (its slides
    stay resumable) and closes the cluster it started; its worker processes taking the signal
    too would only print tracebacks of their own (and warnings about the slides the driver
    cancels). Never registered on an external cluster
    (``--scheduler``), whose workers are someone else's to stop.
    """

    name = "virtime-ignore-interrupts"
    idempotent = True

    def setup(self, worker: Any) -> None:
        import signal

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        # The driver cancels the queued slides when it stops: not a warning in a worker's log.
        logging.getLogger("distributed.worker.state_machine").setLevel(logging.ERROR)


class CohortWorkerPlugin(WorkerPlugin):
    """Prepares queued slides ahead and closes cached engines at teardown.

    A slide task whose key reaches the worker's ``ready`` queue (it will run after the current
    one: Dask sends each worker a little more work than it has threads) is prepared on one
    background thread per worker, in arrival order, at most :data:`MAX_PREPARED` at a time: its
    file read into the page cache (``prefetch_bytes``), the slide opened and its tissue detected,
    and, when the worker's engine runs the device path, its first ``prefetch_batches`` batches
    of tiles read (used only if they are exactly what the loop reads: outputs never change). The
    settings travel with each task (a run's ``CohortOptions``), the plugin's own are the default;
    ``prefetch_bytes=0`` turns prefetching off. A preparation whose task leaves the worker
    (stolen, cancelled) is dropped; teardown stops the thread.
    """

    name = "virtime-cohort"
    idempotent = True  # a second run on the same cluster keeps the workers' warm engines

    def __init__(self, prefetch_bytes: int = 1 << 30, prefetch_batches: int = 2) -> None:
        self.prefetch_bytes = int(prefetch_bytes)
        self.prefetch_batches = int(prefetch_batches)
        self._worker: Any = None
        self._pool: ThreadPoolExecutor | None = None
        self._warmed: set[tuple[str, str]] = set()

    def setup(self, worker: Any) -> None:
        self._worker = worker
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="virtime-prefetch")

    def teardown(self, worker: Any) -> None:
        with _PREP_LOCK:
            keys = list(_PREPARED)
        for key in keys:
            _drop(key)
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        clear_engine_cache()

    def _task_args(self, key: Any) -> tuple[Any, ...] | None:
        """The slide task's arguments, from the worker's copy of its run spec (None if absent)."""
        try:
            ts = self._worker.state.tasks.get(key)
            spec = ts.run_spec if ts is not None else None
            args = tuple(getattr(spec, "args", ()) or ())
        except AttributeError:
            return None
        return args if len(args) >= 6 else None

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        if not _is_slide_key(key):
            return
        if finish in ("released", "forgotten", "cancelled"):
            _drop((str(key[1]), str(key[2])))
        if self._pool is None:
            return
        # Every slide task's move may free a place: prepare the queued slides, highest priority
        # first, up to MAX_PREPARED (those queued when the places were full come in later).
        queued = [key] if finish in ("ready", "constrained") else []
        try:
            queued += sorted((ts.key for ts in self._worker.state.tasks.values()
                              if ts.state in ("ready", "constrained") and ts.key != key
                              and _is_slide_key(ts.key)),
                             key=lambda k: self._worker.state.tasks[k].priority or ())
        except AttributeError:
            pass
        for k in queued:
            if not self._prepare(k):
                break

    def _prepare(self, key: Any) -> bool:
        """Starts preparing the queued slide of ``key``; False when no place is free."""
        _, run_id, slide_id, path = key
        targs = self._task_args(key)
        nbytes, nbatches = self.prefetch_bytes, self.prefetch_batches
        if targs is not None and len(targs) >= 9:
            nbytes = nbytes if targs[7] is None else int(targs[7])
            nbatches = nbatches if targs[8] is None else int(targs[8])
        if nbytes <= 0:
            return True
        k = (str(run_id), str(slide_id))
        # The event loop's thread: _PREP_LOCK only (the engine lock is held during builds).
        with _PREP_LOCK:
            if k in _PREPARED:
                return True
            if len(_PREPARED) >= MAX_PREPARED:
                return False
            if targs is None:  # arguments not readable: the page cache only, as before
                if k not in self._warmed:
                    self._warmed.add(k)
                    self._pool.submit(_prefetch_file, str(path), str(slide_id), nbytes)
                return True
            weights, config = targs[3], targs[4]
            ahead = _Ahead(Future())
            ahead.future = self._pool.submit(_prepare_ahead, str(path), str(slide_id), weights,
                                             config, nbytes, nbatches, ahead.claimed.is_set)
            _PREPARED[k] = ahead
        return True


def _is_slide_key(key: Any) -> bool:
    return isinstance(key, tuple) and len(key) == 4 and key[0] == SLIDE_KEY_PREFIX
