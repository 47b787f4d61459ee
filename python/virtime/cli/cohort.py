"""``virtime cohort run|merge|status``: whole cohorts on Dask distributed, resumable, with a ledger."""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

from virtime.cli.translate import add_model_args, add_translation_args, translate_config_from_args

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("cohort", help="translate a cohort of slides on Dask (run|merge|status)")
    sub = p.add_subparsers(dest="cohort_command", metavar="SUBCOMMAND", required=True)

    run = sub.add_parser("run", help="translate every slide of a manifest (skips finished ones)")
    run.add_argument("manifest", help="CSV/Parquet with path, slide_id, patient_id[, mpp]")
    run.add_argument("-o", "--output", required=True, help="output root; one folder per slide")
    g = run.add_argument_group("cluster")
    g.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="existing Dask scheduler (tcp://host:8786, tls://host:8786); default: a "
                        "local cluster that only this run's client can join (TLS)")
    g.add_argument("--tls-ca-file", default=None, metavar="PEM",
                   help="CA certificate of a tls:// --scheduler's cluster")
    g.add_argument("--tls-cert", default=None, metavar="PEM",
                   help="this client's certificate for a tls:// --scheduler")
    g.add_argument("--tls-key", default=None, metavar="PEM",
                   help="this client's private key (unless it is in --tls-cert)")
    g.add_argument("--workers", type=int, default=None,
                   help="local cluster workers (default: one per GPU, else one per 2 cores)")
    g.add_argument("--threads-per-worker", type=int, default=1, help="local CPU workers (1)")
    g.add_argument("--gpus-per-worker", type=int, default=0, metavar="K",
                   help="GPUs each worker owns; tasks use cuda:0..K-1 (0 = CPU or dask-cuda)")
    g.add_argument("--max-attempts", type=int, default=3,
                   help="tries per slide after crashes or dead workers (3)")
    g.add_argument("--host", default="127.0.0.1",
                   help="interface the local scheduler, workers and dashboard listen on "
                        "(127.0.0.1: this machine only; 0.0.0.0: every interface)")
    g.add_argument("--dashboard", action=argparse.BooleanOptionalAction, default=True,
                   help="start the local Dask dashboard (default: on, on --host)")
    g.add_argument("--dashboard-address", default=":8787", metavar="[HOST]:PORT",
                   help="local dashboard address; without HOST it listens on --host (:8787)")
    g.add_argument("--no-prefetch", action="store_true", help="do not pre-read queued slides")
    g.add_argument("--no-merge", action="store_true", help="skip the cohort features table")
    add_model_args(run)
    add_translation_args(run, "per-slide translation (as virtime translate)")
    run.set_defaults(handler=_run)

    merge = sub.add_parser("merge", help="join finished slides' features with patient ids")
    merge.add_argument("output_root", help="the cohort's output root")
    merge.add_argument("-o", "--output", default=None,
                       help="table to write (default OUT/cohort_features.parquet)")
    merge.set_defaults(handler=_merge)

    status = sub.add_parser("status", help="summary of a cohort's ledger")
    status.add_argument("output_root", help="the cohort's output root")
    status.add_argument("--failed", type=int, default=20, help="failed slides to list (20)")
    status.set_defaults(handler=_status)


def _run(args: argparse.Namespace) -> int:
    from virtime.cohort import CohortOptions, run_cohort
    from virtime.cohort.security import TlsFiles

    config = translate_config_from_args(args, show_progress=False)
    options = CohortOptions(
        scheduler=args.scheduler, workers=args.workers, threads_per_worker=args.threads_per_worker,
        tls=TlsFiles(args.tls_ca_file, args.tls_cert, args.tls_key),
        gpus_per_worker=args.gpus_per_worker, max_attempts=args.max_attempts,
        prefetch_bytes=0 if args.no_prefetch else CohortOptions.prefetch_bytes,
        host=args.host, dashboard=args.dashboard, dashboard_address=args.dashboard_address,
        merge=not args.no_merge, show_progress=not args.quiet, quiet=args.quiet,
    )

    def announce(client: Any) -> None:
        workers = client.scheduler_info().get("workers", {})
        where = (f"Dask dashboard: {client.dashboard_link}" if args.dashboard or args.scheduler
                 else f"Dask scheduler: {client.scheduler.address} (dashboard off)")
        print(f"{where}  ({len(workers)} workers)", flush=True)

    result = run_cohort(args.manifest, args.weights, args.output, config, options=options,
                        on_client=announce)
    _print_summary(result.counts)
    if result.features_path is not None:
        print(f"cohort features: {result.features_path}")
    return 2 if result.counts["failed"] or result.counts["pending"] else 0


def _merge(args: argparse.Namespace) -> int:
    from virtime.cohort import read_ledger
    from virtime.features import merge_features

    path = merge_features(args.output_root, args.output, ledger=read_ledger(args.output_root))
    print(f"cohort features: {path}")
    return 0


def _status(args: argparse.Namespace) -> int:
    from virtime.cohort import ledger_summary, read_ledger

    ledger = read_ledger(args.output_root)
    _print_summary(ledger_summary(ledger))
    failed = ledger[ledger["status"] == "failed"]
    for row in failed.head(max(args.failed, 0)).itertuples(index=False):
        print(f"  failed {row.slide_id}: {row.reason}")
    if len(failed) > args.failed:
        print(f"  ... and {len(failed) - args.failed} more (see cohort_ledger.parquet)")
    return 0


def _print_summary(summary: dict) -> None:
    rate = summary["slides_per_hour"]
    rate_text = "n/a" if math.isnan(rate) else f"{rate:.1f}"
    print(f"slides: {summary['slides']}  done: {summary['done']}  skipped: {summary['skipped']}  "
          f"failed: {summary['failed']}  pending: {summary['pending']}  "
          f"slides/hour (last run): {rate_text}", file=sys.stdout)
