"""``virtime bench``: pipeline throughput vs the official notebook loop and the bare engine."""

from __future__ import annotations

import argparse
import json

from virtime.cli.translate import add_model_args, load_model_from_args

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("bench", help="measure translation throughput on a synthetic slide")
    add_model_args(p)
    p.add_argument("--size", type=int, default=4096, help="synthetic slide side in pixels (4096)")
    p.add_argument("--reference-tiles", type=int, default=8,
                   help="tiles the slow reference loop runs on (8)")
    p.add_argument("--compare", default=None, metavar="WEIGHTS",
                   help="also benchmark these weights (e.g. GigaTIME beside GigaTIME-Flash) on the "
                        "same slide and engine, runs interleaved; prints medians and ratios")
    p.add_argument("--repeats", type=int, default=3, help="interleaved runs per model with "
                   "--compare (3)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from virtime.bench import run_bench
    from virtime.translation import TranslateConfig

    model = load_model_from_args(args)
    config = TranslateConfig(backend=args.backend, precision=args.precision, device=args.device,
                             batch_size=args.batch_size, window_batch=args.window_batch,
                             memory_budget=args.memory_budget, show_progress=False)
    if args.compare is not None:
        return _compare(args, model, config)
    r = run_bench(model, size=args.size, config=config, reference_tiles=args.reference_tiles)
    if args.json:
        print(json.dumps(r.as_dict(), indent=2))
        return 0
    s = r.settings
    print(f"virtime bench: {r.tiles} tiles of {s['tile_size']} px, {s['backend']} "
          f"{s['precision']} on {s['device']}")
    print(f"  reference loop (official notebook)  {r.reference_tiles_per_s:8.2f} tiles/s   1.00x")
    print(f"  virtime pipeline                    {r.pipeline_tiles_per_s:8.2f} tiles/s "
          f"{r.speedup_over_reference:6.2f}x")
    print(f"  virtime tile loop (steady state)    {r.tile_loop_tiles_per_s:8.2f} tiles/s "
          f"{r.tile_loop_tiles_per_s / r.reference_tiles_per_s:6.2f}x")
    print(f"  engine alone, pre-packed batches    {r.engine_tiles_per_s:8.2f} tiles/s "
          f"(whole slide/engine = {r.pipeline_over_engine:.2f}, "
          f"tile loop/engine = {r.tile_loop_over_engine:.2f})")
    print("  stage seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in r.stage_seconds.items()))
    return 0


def _compare(args: argparse.Namespace, model, config) -> int:
    from virtime.bench import compare_bench

    other = load_model_from_args(argparse.Namespace(weights=args.compare))
    names = [m.card.architecture for m in (model, other)]
    if names[0] == names[1]:
        names = [m.card.weights_file or f"model {i + 1}" for i, m in enumerate((model, other))]
    r = compare_bench(dict(zip(names, (model, other))), size=args.size, config=config,
                      repeats=args.repeats, reference_tiles=args.reference_tiles)
    if args.json:
        print(json.dumps(r.as_dict(), indent=2))
        return 0
    s = r.runs[names[0]][0].settings
    print(f"virtime bench: {r.runs[names[0]][0].tiles} tiles of {s['tile_size']} px, "
          f"{s['backend']} {s['precision']} on {s['device']}, medians of {args.repeats} "
          "interleaved runs")
    df = r.summary
    print(f"  {'model':<24} {'engine win/s':>12} {'ratio':>6} {'tile loop tiles/s':>18} "
          f"{'ratio':>6} {'whole slide tiles/s':>20}")
    for name, row in df.iterrows():
        print(f"  {name:<24} {row.engine_windows_per_s:12.2f} {row.engine_windows_ratio:5.2f}x "
              f"{row.tile_loop_tiles_per_s:18.2f} {row.tile_loop_tiles_ratio:5.2f}x "
              f"{row.pipeline_tiles_per_s:20.2f}")
    return 0
