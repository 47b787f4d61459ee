"""``virtime translate SLIDE... -o OUT``: virtual mIF for each slide, one folder per slide."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys

from virtime.cli._common import (
    add_allow_mpp_arg,
    add_allow_slow_arg,
    add_batch_size_arg,
    add_engine_args,
    add_features_args,
    add_geometry_args,
    add_mpp_arg,
    add_quiet_arg,
    add_threads_arg,
)

__all__ = [
    "add_model_args", "add_translation_args", "load_model_from_args", "register",
    "translate_config_from_args", "warn_if_demo_model",
]

log = logging.getLogger(__name__)

OFFICIAL_WEIGHTS_HINT = (
    "download the official GigaTIME weights (model.pth, a gated release from the authors: accept "
    "its terms and download it yourself; virtime never downloads) and pass --weights PATH"
)


def add_model_args(p: argparse.ArgumentParser) -> None:
    """--weights / --backend / --precision / --device, shared by translate, bench and cohort."""
    g = p.add_argument_group("model and engine")
    g.add_argument("--weights", default=None,
                   help="translator weights (.pth official checkpoint or virtime .safetensors); "
                        "default: the bundled demo model, which knows only simulated tissue")
    add_engine_args(g)
    add_batch_size_arg(g, 8)
    g.add_argument("--window-batch", type=int, default=32, help="windows per engine call (32)")
    g.add_argument("--accept-int8-loss", action="store_true",
                   help="run an INT8 translator (--weights OUT.xml from virtime quantize) even "
                        "though its card fails the accuracy gate")
    g.add_argument("--memory-budget", type=_memory_size, default=None, metavar="SIZE",
                   help="peak memory to fit, e.g. 2GiB or 1500MB: batch sizes are chosen from "
                        "the model's measured activation size, at most the two above (default: "
                        "a quarter of RAM, at most 4GiB)")


def _memory_size(text: str) -> int:
    from virtime.engines.memory import parse_bytes
    from virtime.errors import InvalidArgumentError

    try:
        return parse_bytes(text)
    except InvalidArgumentError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def load_model_from_args(args: argparse.Namespace,  # noqa: ANN201 - torch module
                         warn_demo: bool = True):
    """The model named by --weights (with a clear error when the file is missing), or the demo
    (with a warning, unless ``warn_demo`` is False: the caller warns once its inputs are
    checked, :func:`warn_if_demo_model`)."""
    from pathlib import Path

    from virtime.errors import CheckpointError
    from virtime.models import load, load_demo

    if args.weights is None:
        if warn_demo:
            warn_if_demo_model(args)
        return load_demo()
    path = Path(args.weights)
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, expected a checkpoint file")
    if path.suffix == ".xml":  # an INT8 translator: refused when its card fails the gate
        from virtime.models.int8 import load_int8

        return load_int8(path, accept_loss=getattr(args, "accept_int8_loss", False))
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found; {OFFICIAL_WEIGHTS_HINT}")
    return load(path)


def warn_if_demo_model(args: argparse.Namespace) -> None:
    """Without --weights: say that the demo model knows only simulated tissue."""
    if args.weights is None:
        log.warning("no --weights given: using the demo model, which knows only simulated "
                    "tissue; for real slides %s", OFFICIAL_WEIGHTS_HINT)


def add_translation_args(p: argparse.ArgumentParser, title: str = "geometry and outputs") -> None:
    """Per-slide translation flags, shared by ``translate`` and ``cohort run``."""
    g = p.add_argument_group(title)
    add_geometry_args(g)
    g.add_argument("--output-mpp", type=float, default=2.0, help="canvas um/px (2.0)")
    g.add_argument("--normalize", choices=["none", "macenko", "reinhard"], default="none",
                   help="stain normalization of the H&E tiles before the model (default: none)")
    add_threads_arg(g)
    g.add_argument("--ome-tiff", action="store_true", help="also write mif.ome.tiff")
    g.add_argument("--no-features", action="store_true", help="skip slide features")
    f = p.add_argument_group("slide features (features.parquet; a rerun with other values "
                             "recomputes only the features)")
    add_features_args(f)
    g.add_argument("--cells", action="store_true",
                   help="also segment virtual single cells: cells.parquet and cells.* features "
                        "(see virtime cells export)")
    g.add_argument("--force", action="store_true",
                   help="redo slides already translated (and replace a folder of another slide "
                        "with the same id)")
    add_mpp_arg(p)
    add_allow_mpp_arg(p)
    add_quiet_arg(p)


def translate_config_from_args(args: argparse.Namespace, **overrides: object):  # noqa: ANN201
    """The :class:`~virtime.translation.TranslateConfig` the shared flags describe."""
    from virtime.translation import TranslateConfig

    fields = {
        "backend": args.backend, "precision": args.precision, "device": args.device,
        "batch_size": args.batch_size, "window_batch": args.window_batch,
        "memory_budget": args.memory_budget,
        "threads": args.threads, "tile_size": args.tile_size, "overlap": args.overlap,
        "min_tissue": args.min_tissue, "output_mpp": args.output_mpp,
        "normalize": args.normalize, "mpp": args.mpp, "ome_tiff": args.ome_tiff,
        "features": not args.no_features, "force": args.force, "show_progress": not args.quiet,
        "retry_failed": getattr(args, "retry_failed", False),
        "cells": args.cells,
        "allow_mpp": args.allow_mpp,
        "bin_um": args.bin_um, "threshold": args.threshold,
        "max_failed_share": args.max_failed_share,
    }
    return TranslateConfig(**{**fields, **overrides})


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "translate", help="H&E slides to virtual mIF (OME-Zarr + tables)",
        description="Translate each H&E slide into virtual multiplex immunofluorescence: "
                    "OUT/<slide_id>/ holds the 23-channel map (mif.ome.zarr), the tile and slide "
                    "feature tables, a thumbnail and index.html. A rerun skips finished slides and "
                    "resumes interrupted ones.")
    p.add_argument("slides", nargs="+", help="slide files")
    p.add_argument("-o", "--output", required=True, help="output root; one folder per slide")
    add_model_args(p)
    add_translation_args(p)
    p.add_argument("--retry-failed", action="store_true",
                   help="translate again the finished slides that have failed tiles (the rest "
                        "are skipped as usual; --force redoes every slide)")
    p.add_argument("--log-json", default=None, metavar="FILE",
                   help="append machine-readable events (JSON lines) to FILE: each slide's "
                        "start, progress and end (slide_done, slide_skipped, slide_failed, "
                        "interrupted), then the run's (run_done, run_failed, run_interrupted)")
    p.add_argument("--wait", nargs="?", type=float, const=-1.0, default=0.0, metavar="SECONDS",
                   help="when another run holds a slide's folder, wait for it (for ever, or up "
                        "to SECONDS) instead of stopping with a message naming it")
    e = p.add_argument_group("Prov-GigaPath embeddings in the same pass (see virtime embed)")
    e.add_argument("--embed", default=None, metavar="TILE_WEIGHTS",
                   help="also write tile embeddings from these tile-encoder weights")
    e.add_argument("--embed-slide-weights", default=None, metavar="SLIDE_WEIGHTS",
                   help="and the slide embedding from these slide-encoder weights")
    add_allow_slow_arg(e)
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    """The translation, with how it ended recorded in ``--log-json`` (for a batch scheduler)."""
    try:
        failed = _translate_all(args)
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM (the CLI turns it into this)
        with contextlib.suppress(OSError):  # the original reason is what gets reported
            _log_event(args.log_json, "run_interrupted", reason=str(exc) or "SIGINT")
        raise
    except Exception as exc:
        from virtime.cli._console import error_line

        with contextlib.suppress(OSError):  # e.g. the same full disk: report the first error
            _log_event(args.log_json, "run_failed", error=error_line(exc))
        raise
    _log_event(args.log_json, "run_done", slides=len(args.slides), failed=failed)
    return 2 if failed else 0


def _translate_all(args: argparse.Namespace) -> int:
    """Translates every slide; returns how many failed."""
    from virtime.errors import VirtimeError
    from virtime.slide_ids import check_unique_ids
    from virtime.translation.many import translate_slides
    from virtime.translation.request import check_model, check_output_root

    # Before any work (and before the demo model's warning): every slide is there and gets its
    # own folder, the output root can be one, the settings and weights are valid and fit.
    _check_slides_exist(args.slides)
    check_unique_ids(args.slides)
    check_output_root(args.output)
    config = translate_config_from_args(args, log_json=args.log_json,
                                        lock_timeout=None if args.wait < 0 else args.wait)
    embedder = _embedder_from_args(args)
    model = load_model_from_args(args, warn_demo=False)
    check_model(model, config)
    warn_if_demo_model(args)
    # Several slides: one engine for all, the next slide prepared ahead and each slide's finishing
    # writes beside the next one's tile loop (virtime.translation.many).
    failed = 0
    for slide, result in translate_slides(args.slides, model, args.output, config,
                                          embedder=embedder):
        if isinstance(result, VirtimeError):  # a bad slide is recorded and the others go on
            failed += 1
            _log_event(args.log_json, "slide_failed", slide=str(slide), error=str(result))
            print(f"virtime translate: error: {result}", file=sys.stderr)
            continue
        _log_event(args.log_json, "slide_skipped" if result.skipped else "slide_done",
                   slide=str(slide), slide_id=result.slide_id, output_dir=str(result.output_dir),
                   tiles_done=result.tiles_done, tiles_failed=result.tiles_failed,
                   seconds=round(result.seconds, 3))
        if result.skipped and result.features_refreshed:
            print(f"{result.slide_id}: already translated in {result.output_dir}; features "
                  f"recomputed with the new settings")
        elif result.skipped:
            print(f"{result.slide_id}: already done in {result.output_dir} (use --force to "
                  f"redo)")
        else:
            print(f"{result.slide_id}: {result.tiles_done} tiles ({result.tiles_failed} "
                  f"failed) in {result.seconds:.1f} s -> {result.output_dir}")
    return failed


def _log_event(path: str | None, event: str, **fields: object) -> None:
    """One JSON line in the ``--log-json`` file (beside the per-slide events translation
    writes there): how each slide and the whole run ended."""
    if not path:
        return
    import json
    import time

    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"time": time.time(), "event": event, **fields}) + "\n")


def _check_slides_exist(slides: list[str]) -> None:
    """A slide path that is not a file is a typo: stop before any work, naming it."""
    from pathlib import Path

    from virtime.errors import SlideNotFoundError

    for slide in slides:
        if not Path(slide).is_file():
            what = "is a folder, not a slide file" if Path(slide).is_dir() else "no such file"
            raise SlideNotFoundError(f"{slide}: {what}")


def _embedder_from_args(args: argparse.Namespace):  # noqa: ANN202 - TileEmbedder or None
    if args.embed is None:
        return None
    from virtime.embed import EmbedConfig, load_slide_encoder, load_tile_encoder
    from virtime.embed.joint import TileEmbedder

    slide_encoder = load_slide_encoder(args.embed_slide_weights) if args.embed_slide_weights else None
    config = EmbedConfig(backend=args.backend, precision=args.precision, device=args.device,
                         allow_slow=args.allow_slow, show_progress=False)
    return TileEmbedder(load_tile_encoder(args.embed), config, slide_encoder)
