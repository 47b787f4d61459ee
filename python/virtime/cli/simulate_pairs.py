"""``virtime simulate-pairs``: write simulated paired H&E / mIF tiles in the training format."""

from __future__ import annotations

import argparse

from virtime.cli._common import add_quiet_arg

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "simulate-pairs", help="render simulated paired H&E / 23-channel mIF tiles",
        description="Renders tiles with virtime.simulate.tissue into PAIRS_DIR (index.csv, "
                    "he/*.png, targets/*.npz), one random composition and scanner per slide.")
    p.add_argument("-o", "--output", required=True, help="pairs folder to write")
    p.add_argument("--tiles", type=int, default=256, help="number of tiles (default 256)")
    p.add_argument("--size", type=int, default=256, help="tile size in pixels (default 256)")
    p.add_argument("--mpp", type=float, default=0.5, help="microns per pixel (default 0.5)")
    p.add_argument("--tiles-per-slide", type=int, default=8, help="tiles per simulated slide")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    add_quiet_arg(p)
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from virtime.errors import InvalidArgumentError
    from virtime.training.data import write_simulated_pairs

    if args.tiles <= 0 or args.size < 16 or args.tiles_per_slide <= 0:
        raise InvalidArgumentError("--tiles, --size (>= 16) and --tiles-per-slide must be positive")
    index = write_simulated_pairs(args.output, args.tiles, size=args.size, mpp=args.mpp,
                                  tiles_per_slide=args.tiles_per_slide, seed=args.seed,
                                  show_progress=not args.quiet)
    print(f"wrote {len(index)} tiles from {index.slide_id.nunique()} slides to {args.output}")
    return 0
