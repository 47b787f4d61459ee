"""``virtime cells export SLIDE_DIR -o cells.h5ad``: a slide's cells for scanpy/squidpy."""

from __future__ import annotations

import argparse

from virtime.cli._common import add_quiet_arg

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("cells", help="virtual single cells (translate with --cells first)")
    sub = p.add_subparsers(dest="cells_command", metavar="ACTION", required=True)
    e = sub.add_parser("export", help="write a slide's cells.parquet as AnnData (.h5ad)",
                       description="Write a translated slide's virtual cells (cells.parquet, from "
                                   "virtime translate --cells) as AnnData for scanpy/squidpy.")
    e.add_argument("slide_dir", metavar="SLIDE_DIR",
                   help="a translated slide folder OUT/SLIDE_ID (or its cells.parquet)")
    e.add_argument("--anndata", action="store_true",
                   help="write AnnData (.h5ad): the export format, and the default")
    e.add_argument("-o", "--output", required=True, help="output .h5ad")
    e.add_argument("--gating", default=None,
                   help="gating table CSV to re-derive phenotypes (default: as stored)")
    add_quiet_arg(e)
    e.set_defaults(handler=_export)


def _export(args: argparse.Namespace) -> int:
    from virtime.cells import GatingTable, export_anndata

    gating = GatingTable.from_csv(args.gating) if args.gating else None
    out = export_anndata(args.slide_dir, args.output, gating)
    if not args.quiet:
        print(out)
    return 0
