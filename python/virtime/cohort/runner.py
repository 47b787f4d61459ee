"""Cohort runs on Dask distributed: one task per slide, largest first, resumable, with a ledger.

The driver reads the manifest, marks slides whose outputs are already complete as ``skipped``
(nothing finished is recomputed), submits one :func:`~virtime.cohort.worker.translate_slide_task`
per remaining slide with a priority that makes the largest files run first (a short tail), and
records every result in the :class:`~virtime.cohort.ledger.Ledger` as it arrives. Retries are
Dask's: ``retries=`` for exceptions and the scheduler's ``allowed-failures`` for worker deaths
(a worker killed mid-slide makes the slide run again elsewhere, resuming from its last band).

Without a scheduler address a local cluster is started: one worker per GPU with ``dask-cuda``
when GPUs are present, otherwise CPU worker processes; it speaks only TLS with credentials made
for the run, so no other client can attach to it (:mod:`virtime.cohort.security`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from virtime._progress import progress
from virtime.cohort.ledger import Ledger, ledger_summary
from virtime.cohort.lock import cohort_lock
from virtime.cohort.manifest import read_manifest, validate_manifest
from virtime.cohort.security import TlsFiles, local_cluster_security, scheduler_security
from virtime.cohort.worker import (
    SLIDE_KEY_PREFIX,
    CohortWorkerPlugin,
    IgnoreInterruptsPlugin,
    count_attempts,
    translate_slide_task,
)
from virtime.errors import CheckpointError, InputDataError, InvalidArgumentError
from virtime.io.slide_folder import SlideFolder
from virtime.translation import TranslateConfig

__all__ = ["CohortOptions", "CohortResult", "open_client", "run_cohort", "slide_is_complete"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CohortOptions:
    """How a cohort is scheduled (the per-slide settings are a ``TranslateConfig``).

    ``max_attempts`` bounds both exception retries and worker deaths per slide (Dask's
    ``retries = max_attempts - 1``; the local scheduler's ``allowed-failures`` likewise).
    ``workers`` / ``threads_per_worker`` / ``host`` / ``dashboard`` / ``dashboard_address`` only
    shape a local cluster: its scheduler, nannies, workers and dashboard listen on ``host``
    (``127.0.0.1``: this machine only, unless you ask for another interface), a dashboard address
    without a host (``:8787``) on ``host`` too; ``dashboard=False`` starts no dashboard.
    ``quiet`` silences distributed's INFO logs in the driver and the worker processes.
    ``gpus_per_worker`` is how many GPUs each worker owns: tasks then take a device slot each
    (``cuda:0`` ... ``cuda:K-1``) and request one ``GPU`` resource where workers advertise it.
    ``prefetch_bytes`` / ``prefetch_batches``: while a worker translates one slide, the next one
    queued on it is prepared (up to that many bytes of its file read into the page cache, opened,
    tissue detected, and on the device path its first ``prefetch_batches`` batches of tiles
    read), so the GPU does not wait between slides; ``prefetch_bytes=0`` turns it off. Outputs
    do not change. ``tls``: the client's credentials for a ``tls://`` ``scheduler`` (a local
    cluster makes its own, see :mod:`virtime.cohort.security`).
    """

    scheduler: str | None = None
    tls: TlsFiles = TlsFiles()
    workers: int | None = None
    threads_per_worker: int = 1
    gpus_per_worker: int = 0
    max_attempts: int = 3
    prefetch_bytes: int = 1 << 30
    prefetch_batches: int = 2
    host: str = "127.0.0.1"
    dashboard: bool = True
    dashboard_address: str = "127.0.0.1:8787"
    merge: bool = True
    show_progress: bool = True
    quiet: bool = False
    ledger_flush_seconds: float = 5.0


@dataclass
class CohortResult:
    """What a cohort run left: the ledger table, its counts and the merged features table.

    ``counts`` is :func:`~virtime.cohort.ledger.ledger_summary` (slides, one count per status,
    wall_seconds, slides_per_hour, mean_slide_seconds); :attr:`summary` is the table of slides
    per status (it used to be the dict that ``counts`` now is).
    """

    out_root: Path
    ledger: pd.DataFrame
    counts: dict[str, Any]
    submitted: int
    features_path: Path | None = None

    @property
    def summary(self) -> pd.DataFrame:
        """One row per status (done, skipped, failed, pending): ``slides``, and the sums of
        ``tiles_done``, ``tiles_failed`` and ``translate_seconds`` over those slides."""
        from virtime.cohort.ledger import STATUSES

        cols = [c for c in ("tiles_done", "tiles_failed", "translate_seconds")
                if c in self.ledger.columns]
        frame = self.ledger.assign(**{c: pd.to_numeric(self.ledger[c], errors="coerce")
                                      .clip(lower=0) for c in cols})
        grouped = frame.groupby("status")[cols].sum(min_count=1) if cols else None
        rows = []
        for status in STATUSES:
            row: dict[str, Any] = {"status": status, "slides": int(self.counts.get(status, 0))}
            for c in cols:
                row[c] = (float(grouped.loc[status, c]) if grouped is not None
                          and status in grouped.index else float("nan"))
            rows.append(row)
        return pd.DataFrame(rows, columns=["status", "slides", *cols])


def slide_is_complete(out_dir: str | os.PathLike[str], features: bool,
                      slide_path: str | os.PathLike[str] | None = None,
                      model_hash: str | None = None, config: Any = None) -> bool:
    """True when a slide folder is finished and a rerun of it would change nothing.

    Finished means the summary says done and the features are there when wanted. With
    ``slide_path`` the folder must come from that slide file (size and header hash); with
    ``model_hash`` from that model; with ``config`` (a TranslateConfig) from the same
    output-determining settings, and with features made with its ``slide_features`` settings
    (as ``features.parquet`` records them). Anything else is left to ``translate``, which redoes
    the slide, or only its features, and says why, instead of being skipped by the cohort runner
    unseen.
    """
    from virtime.features.table import FEATURES_FILE
    from virtime.translation import is_translated

    out = Path(out_dir)
    if not is_translated(out, slide_path):
        return False
    if features and not (out / FEATURES_FILE).is_file():
        return False
    if model_hash is None and config is None:
        return True
    summary = SlideFolder(out).summary_or_none()
    if summary is None:
        return False
    if model_hash is not None and summary.get("model_hash") != model_hash:
        return False
    if config is not None:
        if _fingerprint_differs(summary, config):
            return False
        if getattr(config, "cells", False) and not (out / SlideFolder.CELLS).is_file():
            return False
        if getattr(config, "retry_failed", False) and summary.get("tiles_failed"):
            return False  # translate runs the slide again
        from virtime.translation.resume import stale_features

        if stale_features(out, config) is not None:  # translate() recomputes only the features
            return False
    return True


def _fingerprint_differs(summary: dict[str, Any], config: Any) -> bool:
    """Whether ``config`` asks for another translation than the one ``summary`` records: the same
    rule as translate's (:mod:`virtime.translation.fingerprint`). The model's fields (window,
    input mpp) are taken from the record (its model hash is checked apart), and so is the slide's
    mpp unless ``config.mpp`` sets it (a manifest mpp does)."""
    from virtime.translation.fingerprint import fingerprint_diff, translation_fingerprint
    from virtime.translation.request import resolve_normalizer

    recorded = summary.get("fingerprint")
    if not isinstance(recorded, dict):
        return True
    try:
        requested = translation_fingerprint(
            model_hash=str(recorded.get("model_hash")), engine=None, config=config,
            normalizer=resolve_normalizer(config.normalize), window=int(recorded["window"]),
            model_mpp=float(recorded["model_mpp"]),
            slide_mpp=float(config.mpp if config.mpp is not None else recorded["slide_mpp"]))
    except (KeyError, TypeError, ValueError):
        return True
    from virtime.slide_ids import IDENTITY_FIELDS

    identity = {k: recorded.get(k) for k in IDENTITY_FIELDS}  # same_source compares the file
    return bool(fingerprint_diff(recorded, {**requested, **identity}, requested=True))


def _weights_hash(weights: str | os.PathLike[str] | None) -> str:
    """The model hash translate records for these weights (the bundled demo model without)."""
    if weights is None:
        from virtime.models import load_demo

        return str(load_demo().card.sha256)
    from virtime.models.card import sha256_file

    return sha256_file(weights)


def _gpu_count() -> int:
    try:
        import torch

        return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001 - a broken CUDA install means "no usable GPU" here
        return 0


def _listen_kwargs(options: CohortOptions) -> dict[str, Any]:
    """LocalCluster arguments that put the scheduler, nannies, workers and dashboard on
    ``options.host``; a dashboard address without a host (``:8787``) means that host too.

    With the dashboard off the scheduler still serves its small HTTP endpoint (health, metrics;
    distributed always starts it): on ``options.host`` and a free port, never on 8787.
    """
    if not options.dashboard:
        return dict(host=options.host, dashboard_address=f"{options.host}:0",
                    scheduler_kwargs={"dashboard": False})
    address = options.dashboard_address.strip()
    return dict(host=options.host,
                dashboard_address=f"{options.host}{address}" if address.startswith(":")
                else address)


@contextlib.contextmanager
def _quiet_distributed(quiet: bool) -> Iterator[dict[str, Any]]:
    """Distributed's loggers at WARNING in this process while the context lasts, and the dask
    config that makes worker processes start at WARNING too (they configure logging on import,
    so the setting travels as an environment variable set before they are spawned)."""
    if not quiet:
        yield {}
        return
    logger = logging.getLogger("distributed")
    before = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield {"distributed.nanny.pre-spawn-environ": {"DASK_LOGGING__DISTRIBUTED": "warning"}}
    finally:
        logger.setLevel(before)


@contextlib.contextmanager
def open_client(options: CohortOptions | None = None) -> Iterator[Any]:
    """A ``distributed.Client``: connected to ``options.scheduler``, or on a new local cluster.

    The local cluster has one worker per GPU via ``dask-cuda`` when GPUs are present (a warning
    and a single GPU worker when dask-cuda is not installed), else ``options.workers`` CPU worker
    processes (default: one per two cores); everything it starts listens on ``options.host``
    (loopback by default). Closing the context closes what it started.
    """
    options = options if options is not None else CohortOptions()
    with _quiet_distributed(options.quiet) as quiet_config:
        with _client(options, quiet_config) as client:
            yield client


@contextlib.contextmanager
def _client(options: CohortOptions, extra_config: dict[str, Any]) -> Iterator[Any]:
    import dask
    from distributed import Client, LocalCluster

    if options.scheduler:
        client = _connect(options.scheduler, options.tls)
        try:
            yield client
        finally:
            client.close()
        return
    from virtime.engines.base import cpu_threads

    settings = {"distributed.scheduler.allowed-failures": max(0, options.max_attempts - 1),
                **extra_config}
    # Mutual TLS with this run's own credentials: only the client below can attach.
    where = {**_listen_kwargs(options), "security": local_cluster_security()}
    with dask.config.set(settings):
        gpus = _gpu_count()
        cluster: Any
        if gpus:
            try:
                from dask_cuda import LocalCUDACluster  # type: ignore[import-not-found]
            except ImportError:
                log.warning("%d GPU(s) found but dask-cuda is not installed (pip install "
                            "dask-cuda): starting one worker on the first GPU", gpus)
                cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=True, **where)
            else:
                cluster = LocalCUDACluster(n_workers=options.workers or gpus, threads_per_worker=1,
                                           **where)
        else:
            n = options.workers or max(1, cpu_threads() // 2)
            cluster = LocalCluster(n_workers=n, threads_per_worker=options.threads_per_worker,
                                   processes=True, **where)
        client = Client(cluster, security=cluster.security)
        client.register_plugin(IgnoreInterruptsPlugin())  # Ctrl-C is the driver's to handle
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def _connect(address: str, tls: TlsFiles) -> Any:
    """A client of the existing scheduler at ``address``; one line when it cannot connect."""
    from distributed import Client

    security = scheduler_security(address, tls)
    try:
        return Client(address, security=security)
    except (OSError, TimeoutError, TypeError, ValueError) as exc:  # refused, TLS, bad address
        hint = (" (a tls:// scheduler needs --tls-ca-file, --tls-cert and --tls-key)"
                if address.startswith("tls://") and security is None else "")
        raise InvalidArgumentError(f"--scheduler {address}: cannot connect: "
                                   f"{' '.join(str(exc).split())[:200]}{hint}") from exc



def run_cohort(
    manifest: str | os.PathLike[str] | pd.DataFrame,
    model: str | os.PathLike[str] | None,
    output: str | os.PathLike[str],
    config: TranslateConfig | None = None,
    *,
    options: CohortOptions | None = None,
    client: Any | None = None,
    on_client: Callable[[Any], None] | None = None,
) -> CohortResult:
    """Translates every slide of a manifest on Dask; resumable, idempotent, with a ledger.

    The arguments come in the order ``(what, model, output, config)``, as in
    :func:`~virtime.translation.translate`: ``run_cohort("slides.csv", "model.pth", "out/",
    TranslateConfig(...))``.

    Parameters
    ----------
    manifest
        Path of a CSV/Parquet manifest, or a table (see :mod:`virtime.cohort.manifest`).
    model
        Translator weights path, shipped to the workers (each loads it once); ``None``: the
        bundled demo model.
    output
        Output root: ``OUT/<slide_id>/`` per slide as ``virtime translate`` writes it, plus
        ``cohort_ledger.parquet`` and ``cohort_features.parquet``.
    config
        Per-slide translation settings (default ``TranslateConfig()``); a manifest ``mpp``
        overrides ``config.mpp`` per slide.
    options
        Scheduling, see :class:`CohortOptions` (default ``CohortOptions()``).
    client
        An existing ``distributed.Client``; otherwise :func:`open_client` makes one, and only if
        some slide needs work.
    on_client
        Called with the client before tasks are submitted (the CLI prints the dashboard there).

    The output root is locked for the run (:mod:`virtime.cohort.lock`): while another cohort run
    holds it, :class:`~virtime.errors.OutputLockedError` (one line) before anything is read or
    written.
    """
    weights = model
    config = config if config is not None else TranslateConfig()
    options = options if options is not None else CohortOptions()
    if options.max_attempts < 1:
        raise InvalidArgumentError(f"max_attempts must be >= 1, got {options.max_attempts}")
    if options.tls.given() and not options.scheduler:
        raise InvalidArgumentError("TLS files (--tls-ca-file/--tls-cert/--tls-key) are for an "
                                   "existing --scheduler; a local cluster makes its own")
    if weights is not None:
        weights = os.path.abspath(weights)
        if os.path.isdir(weights):
            raise CheckpointError(f"{weights}: is a directory, expected a checkpoint file")
        if not os.path.isfile(weights):
            raise CheckpointError(f"{weights}: weights file not found (workers need a path they "
                                  f"can read: use a shared file system)")
    table = (validate_manifest(manifest) if isinstance(manifest, pd.DataFrame)
             else read_manifest(manifest))
    _check_reserved_ids(table)
    out = Path(output).absolute()
    out.mkdir(parents=True, exist_ok=True)
    with cohort_lock(out):  # one run at a time writes this ledger (a second stops here)
        return _run_locked(table, out, weights, config, options, client, on_client)


def _run_locked(table: pd.DataFrame, out: Path, weights: str | None, config: TranslateConfig,
                options: CohortOptions, client: Any | None,
                on_client: Callable[[Any], None] | None) -> CohortResult:
    """:func:`run_cohort` once the output root is locked: ledger, tasks, merge."""
    run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    ledger = Ledger.open(out, table, run_id, flush_seconds=options.ledger_flush_seconds)
    wanted_hash = _weights_hash(weights)
    complete = [row.slide_id for row in table.itertuples()
                if not config.force and slide_is_complete(out / row.slide_id, config.features,
                                                          row.path, wanted_hash,
                                                          _slide_config(config, row))]
    _mark_skipped(ledger, out, complete)
    todo = table[~table["slide_id"].isin(set(complete))]
    todo = todo.sort_values("size_bytes", ascending=False, kind="stable")
    ledger.flush()
    log.info("cohort %s: %d slides, %d already complete, %d to run", run_id, len(table),
             len(complete), len(todo))
    if len(todo):
        if client is None:
            with open_client(options) as own:
                _run_on(own, ledger, todo, out, weights, config, options, run_id, on_client)
        else:
            _run_on(client, ledger, todo, out, weights, config, options, run_id, on_client)
    ledger.close()
    frame = ledger.frame()
    features_path = None
    if options.merge and frame["status"].isin(["done", "skipped"]).any() and config.features:
        from virtime.features.merge import merge_features

        features_path = merge_features(out, ledger=frame)
    return CohortResult(out, frame, ledger_summary(frame), len(todo), features_path)


def _check_reserved_ids(table: pd.DataFrame) -> None:
    """Refuses slide ids that name the cohort's own files (``OUT/<slide_id>/`` would collide)."""
    from virtime.cohort.ledger import JOURNAL_NAME, LEDGER_NAME
    from virtime.cohort.lock import COHORT_LOCK_NAME
    from virtime.features.merge import COHORT_FEATURES_NAME
    from virtime.cohort.worker import ATTEMPTS_DIR

    reserved = {n.lower(): n for n in (LEDGER_NAME, JOURNAL_NAME, COHORT_FEATURES_NAME,
                                       ATTEMPTS_DIR, COHORT_LOCK_NAME)}
    for sid, path in zip(table["slide_id"], table["path"]):
        if str(sid).lower() in reserved:
            raise InputDataError(
                f"{path}: slide id {sid!r} is the name of the cohort file "
                f"OUT/{reserved[str(sid).lower()]}; give this slide another slide_id in the "
                f"manifest")


def _mark_skipped(ledger: Ledger, out: Path, slide_ids: list[str]) -> None:
    for sid in slide_ids:
        rec = ledger.records[sid]
        rec.update(status="skipped", reason="", attempts=0, updated=time.time())
        if not rec.get("translate_seconds") or rec["translate_seconds"] != rec["translate_seconds"]:
            summary = SlideFolder(out / sid).summary_or_none()
            try:
                if summary is not None:
                    rec.update(translate_seconds=float(summary.get("seconds", math.nan)),
                               tiles_done=int(summary.get("tiles_done", -1)),
                               tiles_failed=int(summary.get("tiles_failed", -1)))
            except ValueError:  # a hand-edited summary: the ledger keeps its values
                pass


def _gpu_resources(client: Any, gpus_per_worker: int) -> dict[str, float] | None:
    """``{"GPU": 1}`` when GPU tasks should claim a resource the workers advertise."""
    if gpus_per_worker <= 0:
        return None
    workers = client.scheduler_info().get("workers", {})
    if workers and all("GPU" in (w.get("resources") or {}) for w in workers.values()):
        return {"GPU": 1}
    log.warning("workers advertise no GPU resource (start them with --resources GPU=%d); tasks "
                "are not limited to one per GPU", gpus_per_worker)
    return None


def _slide_config(config: TranslateConfig, row: Any) -> TranslateConfig:
    """A manifest row's settings: the cohort's, with its own ``mpp`` when it gives one."""
    return config if math.isnan(row.mpp) else dataclasses.replace(config, mpp=float(row.mpp))


def _run_on(client: Any, ledger: Ledger, todo: pd.DataFrame, out: Path, weights: str | None,
            config: TranslateConfig, options: CohortOptions, run_id: str,
            on_client: Callable[[Any], None] | None) -> None:
    """Submits the slides, then records each result as it arrives."""
    from distributed import as_completed

    if on_client is not None:
        on_client(client)
    client.register_plugin(CohortWorkerPlugin(options.prefetch_bytes, options.prefetch_batches),
                           name="virtime-cohort")
    resources = _gpu_resources(client, options.gpus_per_worker)
    base = dataclasses.replace(config, show_progress=False, log_json=None)
    futures: dict[Any, str] = {}
    n = len(todo)
    for rank, row in enumerate(todo.itertuples(index=False)):
        cfg = _slide_config(base, row)
        fut = client.submit(
            translate_slide_task, row.path, row.slide_id, str(out), weights, cfg, run_id,
            options.gpus_per_worker, options.prefetch_bytes, options.prefetch_batches,
            key=(SLIDE_KEY_PREFIX, run_id, row.slide_id, row.path), priority=n - rank,
            retries=options.max_attempts - 1, resources=resources, pure=False,
        )
        futures[fut] = row.slide_id
    started = time.monotonic()
    counts = {"done": 0, "failed": 0, "skipped": 0}
    try:
        with progress(total=n, desc="cohort", unit="slide", enabled=options.show_progress) as bar:
            for fut in as_completed(list(futures)):
                sid = futures.pop(fut)
                rec = _collect(fut, out, sid, run_id)
                ledger.record(sid, **rec)
                counts[rec["status"]] = counts.get(rec["status"], 0) + 1
                fut.release()
                bar.update(1)
                bar.set_postfix(_progress_view(counts, n, time.monotonic() - started))
    finally:
        if futures:  # the driver was interrupted: stop the rest, keep what finished
            client.cancel(list(futures))
        ledger.flush()
    log.info("cohort %s: %s", run_id, _progress_view(counts, n, time.monotonic() - started))


def _collect(fut: Any, out: Path, slide_id: str, run_id: str) -> dict[str, Any]:
    """A ledger record from a finished future; exhausted retries become a failed record."""
    if fut.status == "finished":
        return dict(fut.result())
    try:
        exc = fut.exception()
    except Exception as err:  # noqa: BLE001 - a cancelled future raises instead of returning
        exc = err
    from distributed import KilledWorker

    attempts = count_attempts(out, slide_id, run_id)
    if isinstance(exc, KilledWorker):
        reason = f"worker died while translating ({attempts} attempts): {exc}"
    else:
        reason = f"{type(exc).__name__}: {' '.join(str(exc).split())} (after {attempts} attempts)"
    return {"status": "failed", "reason": reason[:500], "attempts": attempts,
            "started": math.nan, "seconds": math.nan, "finished": time.time()}


def _progress_view(counts: dict[str, int], total: int, seconds: float) -> dict[str, str]:
    finished = sum(counts.values())
    rate = finished / seconds * 3600 if seconds > 0 else 0.0
    eta = (total - finished) / (rate / 3600) if rate > 0 else float("nan")
    return {"done": str(counts.get("done", 0) + counts.get("skipped", 0)),
            "failed": str(counts.get("failed", 0)), "slides/h": f"{rate:.0f}",
            "eta": "?" if math.isnan(eta) else time.strftime("%H:%M:%S", time.gmtime(eta))}
