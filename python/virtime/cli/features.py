"""``virtime features``: slide features from stored outputs, or merge them into a cohort table.

    virtime features OUT/<slide_id> [OUT/<slide_id> ...] [--plots]
    virtime features --merge OUT -o cohort_features.parquet
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from virtime.cli._common import add_features_args, add_quiet_arg, features_config_from_args

__all__ = ["register"]

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    """Adds the ``features`` subcommand."""
    p = subparsers.add_parser(
        "features",
        help="compute slide features from stored outputs, or merge a cohort table",
        description="Recompute <slide_dir>/features.parquet from <slide_dir>/mif.ome.zarr, or "
        "with --merge OUT concatenate OUT/*/features.parquet into one cohort table.",
    )
    p.add_argument("slide_dirs", nargs="*", metavar="SLIDE_DIR", help="OUT/<slide_id> folders")
    p.add_argument("--merge", metavar="OUT", help="merge OUT/*/features.parquet")
    p.add_argument("-o", "--output", default="cohort_features.parquet",
                   help="cohort table path for --merge (default: %(default)s)")
    p.add_argument("--mpp", type=float, default=None,
                   help="µm per pixel of the map (default: from the OME-Zarr metadata)")
    add_features_args(p)
    p.add_argument("--plots", action="store_true",
                   help="also write features_bars.png and activation_panel.png per slide")
    add_quiet_arg(p)
    p.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    from pathlib import Path

    from virtime.errors import InvalidArgumentError
    from virtime.features import features_from_outputs, merge_features

    if args.merge:
        if args.slide_dirs:
            raise InvalidArgumentError("give either slide folders or --merge OUT, not both")
        path = merge_features(args.merge, args.output)
        log.info("wrote %s", path)
        return 0
    if not args.slide_dirs:
        raise InvalidArgumentError("give at least one slide folder (or --merge OUT)")
    settings = features_config_from_args(args).as_kwargs()
    for slide_dir in args.slide_dirs:
        row = features_from_outputs(slide_dir, mpp=args.mpp, show_progress=not args.quiet,
                                    **settings)
        if args.plots:
            _plots(Path(slide_dir), row)
        log.info("%s: features written", slide_dir)
    return 0


def _plots(slide_dir: Any, row: dict[str, Any]) -> None:
    from virtime.features.plots import plot_activation_panel, plot_channel_bars, save_figure
    from virtime.features.table import load_slide_outputs

    out = load_slide_outputs(slide_dir)
    save_figure(plot_channel_bars(row, title=out.slide_id), slide_dir / "features_bars.png")
    save_figure(plot_activation_panel(out.overview(), out.channels, title=out.slide_id),
                slide_dir / "activation_panel.png")
