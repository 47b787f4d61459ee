"""Flags shared by several subcommands, defined once.

Each flag that more than one subcommand takes has one ``add_*`` function here (its name, type,
default and help); a subcommand calls it on its parser or on one of its argument groups.
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["BACKENDS", "LEVELS", "PRECISIONS", "add_adjust_arg",
           "add_allow_mpp_arg", "add_allow_slow_arg",
           "add_backend_arg", "add_batch_size_arg", "add_engine_args", "add_features_args",
           "add_geometry_args", "add_levels_arg", "add_mpp_arg", "add_pairs_args",
           "add_quiet_arg", "add_stats_args", "add_threads_arg", "add_tiling_args",
           "features_config_from_args",
           "tiling_config_from_args", "write_stats_table"]

BACKENDS = ["auto", "torch", "onnxruntime", "tensorrt", "openvino"]
PRECISIONS = ["fp32", "fp16", "bf16", "int8"]
LEVELS = ["pan-cancer", "cancer_type", "subtype"]  # cohort levels of the statistics commands

_Parser = argparse.ArgumentParser | argparse._ArgumentGroup


def add_mpp_arg(parser: _Parser) -> None:
    parser.add_argument(
        "--mpp", type=float, default=None,
        help="level-0 microns per pixel, for slides whose metadata lacks it (e.g. 0.25 for 40x)",
    )


def add_allow_mpp_arg(parser: _Parser) -> None:
    """``--allow-mpp``: accept a slide mpp outside :data:`virtime.mpp.MPP_RANGE` or too coarse
    for the model."""
    from virtime.mpp import mpp_range_text

    parser.add_argument(
        "--allow-mpp", action="store_true",
        help=f"translate a slide whose mpp is outside {mpp_range_text()} um/px, or more than 4x "
             f"coarser than the model's, anyway (refused by default: usually a resolution tag in "
             f"the wrong unit; an explicit --mpp already skips the range check)",
    )


def add_backend_arg(parser: _Parser, default: str = "auto") -> None:
    parser.add_argument("--backend", default=default, choices=BACKENDS,
                        help="inference engine; auto picks the fastest one installed for the "
                             f"device (default: {default})")


def add_engine_args(parser: _Parser) -> None:
    """``--backend / --precision / --device``: which engine runs the model, and where."""
    add_backend_arg(parser)
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS,
                        help="engine arithmetic; fp16/bf16 are faster on a GPU (default: fp32)")
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


def add_features_args(parser: _Parser) -> None:
    """``--bin-um / --threshold / --max-failed-share``: the settings of the slide features
    (``features.parquet``), defaults as :class:`~virtime.features.config.FeaturesConfig`'s."""
    parser.add_argument("--bin-um", type=float, default=64.0,
                        help="spatial bin side of the slide features, um (64)")
    parser.add_argument("--threshold", type=float, default=0.5,
                        help="positivity threshold on the probability (0.5)")
    parser.add_argument("--max-failed-share", type=float, default=0.05, metavar="SHARE",
                        help="flag a slide (qc_failed_share_exceeded, with a warning) when failed "
                             "tiles cover more than this share of its tissue (0.05)")


def features_config_from_args(args: argparse.Namespace) -> Any:
    """The :class:`~virtime.features.config.FeaturesConfig` of :func:`add_features_args`'s flags
    (checked: a bad value is an :class:`~virtime.errors.InvalidArgumentError`)."""
    from virtime.features.config import FeaturesConfig

    return FeaturesConfig(bin_um=args.bin_um, threshold=args.threshold,
                          max_failed_share=args.max_failed_share)


def add_pairs_args(parser: _Parser, output: str) -> None:
    """``PAIRS_DIR -o OUTPUT --batch-size --val-fraction``: a command reading a paired-tiles
    folder (train, evaluate: the same slide-level split); ``output`` says what ``-o`` names."""
    parser.add_argument("pairs_dir", help="pairs folder (index.csv, he/, targets/)")
    parser.add_argument("-o", "--output", required=True, help=output)
    add_batch_size_arg(parser, 8)
    parser.add_argument("--val-fraction", type=float, default=0.2,
                        help="fraction of slides held out for validation (0.2)")


def add_levels_arg(parser: _Parser, default: list[str] | None = None) -> None:
    """``--levels``: the cohort levels a statistics command tests at (default: all three)."""
    levels = list(LEVELS if default is None else default)
    parser.add_argument("--levels", nargs="+", default=levels, choices=LEVELS,
                        help=f"cohort levels to test at (default: {' '.join(levels)})")


def add_min_patients_arg(parser: _Parser, default: int = 20) -> None:
    """``--min-patients``: the smallest group a statistics command tests."""
    parser.add_argument("--min-patients", type=int, default=default,
                        help=f"smallest group tested ({default})")


def add_stats_args(parser: argparse.ArgumentParser, table: str,
                   levels: list[str] | None = None) -> None:
    """A statistics command's cohort (``--features --clinical ...``), its ``-o`` table (``table``
    names it) and ``--levels``; the table is written by :func:`write_stats_table`."""
    from virtime.cli.validate import add_cohort_args

    add_cohort_args(parser)
    parser.add_argument("-o", "--output", required=True, help=f"{table} table (.parquet/.csv)")
    add_levels_arg(parser, levels)


def write_stats_table(frame: Any, path: str, args: argparse.Namespace) -> None:
    """A statistics command's table at ``path``, stamped with the model hash of the
    ``--features`` table it was computed from."""
    from virtime.stats.io import features_model_hash, write_table

    write_table(frame, path, model_hash=features_model_hash(args.features))


def add_adjust_arg(parser: _Parser) -> None:
    """``--adjust``: the confounders an association or survival command adjusts for."""
    parser.add_argument(
        "--adjust", default="auto", metavar="COLS",
        help="covariates to adjust for: auto (cancer type at pan-cancer level, subtype at "
             "cancer-type level, and the site column wherever there is one), none (the "
             "paper's univariate table only), or comma-separated clinical/feature columns")


def add_quiet_arg(parser: _Parser) -> None:
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def tiling_config_from_args(args: argparse.Namespace) -> Any:
    from virtime.tiling import TilingConfig

    return TilingConfig(
        target_mpp=args.target_mpp, tile_size=args.tile_size, overlap=args.overlap,
        min_tissue=args.min_tissue,
    )
