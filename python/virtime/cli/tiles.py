"""``virtime tiles SLIDE -o DIR``: writes model-ready tiles and a tile table."""

from __future__ import annotations

import argparse

from virtime.cli._common import (
    add_mpp_arg,
    add_quiet_arg,
    add_threads_arg,
    add_tiling_args,
    tiling_config_from_args,
)

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("tiles", help="write tissue tiles (PNG) and a tile table (Parquet)")
    p.add_argument("slide", help="slide file")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument(
        "--normalize", choices=["none", "macenko", "reinhard"], default="none",
        help="stain normalization against the built-in H&E reference (none)",
    )
    add_threads_arg(p)
    p.add_argument("--limit", type=int, default=None, help="write at most this many tiles")
    add_mpp_arg(p)
    add_tiling_args(p)
    add_quiet_arg(p)
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from virtime.tile_export import export_tiles

    result = export_tiles(
        args.slide, args.output, mpp=args.mpp, tiling=tiling_config_from_args(args),
        normalize=args.normalize, threads=args.threads, limit=args.limit,
        show_progress=not args.quiet,
    )
    print(f"{result.written} tiles written to {result.folder} ({result.failed} failed)")
    return 0
