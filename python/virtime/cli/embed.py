"""``virtime embed SLIDE... -o OUT``: Prov-GigaPath tile and slide embeddings, one folder per slide."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from virtime.cli._common import (
    add_allow_slow_arg,
    add_batch_size_arg,
    add_engine_args,
    add_geometry_args,
    add_mpp_arg,
    add_quiet_arg,
    add_threads_arg,
)

__all__ = ["register"]

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "embed", help="Prov-GigaPath tile embeddings (Parquet) and slide embedding per slide"
    )
    p.add_argument("slides", nargs="+", help="slide files")
    p.add_argument("-o", "--output", required=True, help="output root; one folder per slide")
    p.add_argument("--tile-weights", required=True,
                   help="official tile encoder (pytorch_model.bin, gated; download it yourself)")
    p.add_argument("--slide-weights", default=None,
                   help="official slide encoder (slide_encoder.pth); without it only tiles")
    p.add_argument("--all-layers", action="store_true",
                   help="also store every slide-encoder layer's embedding")
    g = p.add_argument_group("engine")
    add_engine_args(g)
    add_batch_size_arg(g, 32, "tiles per engine call")
    add_threads_arg(g)
    add_geometry_args(g, tile_size=False, overlap=False)
    add_allow_slow_arg(g, "run the 1.1 B-parameter encoder on CPU anyway (hours per slide)")
    add_mpp_arg(p)
    add_quiet_arg(p)
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from virtime.embed import EmbedConfig, embed_slide, load_slide_encoder, load_tile_encoder
    from virtime.slide import Slide
    from virtime.slide_ids import check_unique_ids

    ids = check_unique_ids(args.slides)  # before any work: one folder per slide, same ids as translate
    tile = load_tile_encoder(args.tile_weights)
    slide_enc = load_slide_encoder(args.slide_weights) if args.slide_weights else None
    if slide_enc is None:
        log.warning("no --slide-weights: writing tile embeddings only")
    config = EmbedConfig(
        backend=args.backend, precision=args.precision, device=args.device,
        batch_size=args.batch_size, threads=args.threads, min_tissue=args.min_tissue,
        all_layers=args.all_layers, allow_slow=args.allow_slow, show_progress=not args.quiet,
    )
    if slide_enc is not None and args.device:
        slide_enc = slide_enc.to(args.device)
    root = Path(args.output)
    for path, slide_id in zip(args.slides, ids):
        result = embed_slide(Slide(path, mpp=args.mpp), tile, root / slide_id, config, slide_enc)
        log.info("%s: %d tiles embedded -> %s", path, len(result.tile_embeddings), result.out_dir)
    return 0
