"""Flags shared by several subcommands, defined once.

Each flag that more than one subcommand takes has one ``add_*`` function here (its name, type,
default and help); a subcommand calls it on its parser or on one of its argument groups.
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["BACKENDS", "PRECISIONS", "add_allow_mpp_arg", "add_allow_slow_arg",
           "add_backend_arg", "add_batch_size_arg", "add_engine_args", "add_geometry_args", "add_mpp_arg",
           "add_quiet_arg", "add_threads_arg", "add_tiling_args", "tiling_config_from_args"]

BACKENDS = ["auto", "torch", "onnxruntime", "tensorrt"]
PRECISIONS = ["fp32", "fp16", "bf16"]

_Parser = argparse.ArgumentParser | argparse._ArgumentGroup


def add_mpp_arg(parser: _Parser) -> None:
    parser.add_argument(
        "--mpp", type=float, default=None,
        help="level-0 microns per pixel, for slides whose metadata lacks it (e.g. 0.25 for 40x)",
    )


def add_allow_mpp_arg(parser: _Parser) -> None:
    """``--allow-mpp``: accept a slide mpp outside 0.1-2 um/px or too coarse for the model."""
    parser.add_argument(
        "--allow-mpp", action="store_true",
        help="translate a slide whose mpp is outside 0.1-2 um/px, or more than 4x coarser than "
             "the model's, anyway (refused by default: usually a resolution tag in the wrong "
             "unit; an explicit --mpp already skips the range check)",
    )


def add_backend_arg(parser: _Parser, default: str = "auto") -> None:
    parser.add_argument("--backend", default=default, choices=BACKENDS)


def add_engine_args(parser: _Parser) -> None:
    """``--backend / --precision / --device``: which engine runs the model, and where."""
    add_backend_arg(parser)
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS)
    parser.add_argument("--device", default=None,
                        help="cpu, cuda or cuda:N (default: GPU if present)")


def add_batch_size_arg(parser: _Parser, default: int, what: str = "tiles per batch") -> None:
    parser.add_argument("--batch-size", type=int, default=default, help=f"{what} ({default})")


def add_threads_arg(parser: _Parser) -> None:
    parser.add_argument("--threads", type=int, default=0, help="reader threads (0 = all cores)")


def add_allow_slow_arg(parser: _Parser,
                       what: str = "run a billion-parameter tile encoder on CPU anyway") -> None:
    parser.add_argument("--allow-slow", action="store_true", help=what)


def add_geometry_args(parser: _Parser, *, tile_size: bool = True, overlap: bool = True,
                      min_tissue: bool = True) -> None:
    """``--tile-size / --overlap / --min-tissue`` (those asked for), defaults as the configs'."""
    if tile_size:
        parser.add_argument("--tile-size", type=int, default=512,
                            help="tile side in pixels at the model's mpp (512)")
    if overlap:
        parser.add_argument("--overlap", type=int, default=0,
                            help="pixels shared by neighbouring tiles, blended (0 = the official "
                                 "layout; translation: at most half a window)")
    if min_tissue:
        parser.add_argument("--min-tissue", type=float, default=0.1,
                            help="keep tiles with at least this tissue fraction (0.1)")


def add_tiling_args(parser: argparse.ArgumentParser) -> None:
    """A ``tiling`` group: ``--target-mpp`` and the geometry flags."""
    group = parser.add_argument_group("tiling")
    group.add_argument("--target-mpp", type=float, default=0.25, help="model input um/px (0.25)")
    add_geometry_args(group)


def add_quiet_arg(parser: _Parser) -> None:
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def tiling_config_from_args(args: argparse.Namespace) -> Any:
    from virtime.tiling import TilingConfig

    return TilingConfig(
        target_mpp=args.target_mpp, tile_size=args.tile_size, overlap=args.overlap,
        min_tissue=args.min_tissue,
    )
