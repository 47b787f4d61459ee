"""Flags shared by several subcommands, defined once."""

from __future__ import annotations

import argparse

__all__ = ["add_allow_mpp_arg", "add_mpp_arg", "add_quiet_arg", "add_tiling_args",
           "tiling_config_from_args"]


def add_mpp_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--mpp", type=float, default=None,
        help="level-0 microns per pixel, for slides whose metadata lacks it (e.g. 0.25 for 40x)",
    )


def add_allow_mpp_arg(parser: argparse.ArgumentParser) -> None:
    """``--allow-mpp``: accept a slide mpp outside 0.1-2 um/px or too coarse for the model."""
    parser.add_argument(
        "--allow-mpp", action="store_true",
        help="translate a slide whose mpp is outside 0.1-2 um/px, or more than 4x coarser than "
             "the model's, anyway (refused by default: usually a resolution tag in the wrong "
             "unit; an explicit --mpp already skips the range check)",
    )


def add_tiling_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("tiling")
    group.add_argument("--target-mpp", type=float, default=0.25, help="model input um/px (0.25)")
    group.add_argument("--tile-size", type=int, default=512, help="tile side in pixels (512)")
    group.add_argument("--overlap", type=int, default=0, help="pixels shared by neighbours (0)")
    group.add_argument(
        "--min-tissue", type=float, default=0.1, help="keep tiles with at least this tissue (0.1)"
    )


def add_quiet_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def tiling_config_from_args(args: argparse.Namespace) -> object:
    from virtime.tiling import TilingConfig

    return TilingConfig(
        target_mpp=args.target_mpp, tile_size=args.tile_size, overlap=args.overlap,
        min_tissue=args.min_tissue,
    )
