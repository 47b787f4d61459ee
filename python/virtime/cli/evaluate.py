"""``virtime evaluate``: GigaTIME-protocol evaluation of a translator on paired tiles."""

from __future__ import annotations

import argparse

from virtime.cli._common import add_pairs_args, add_quiet_arg

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate", help="per-channel Pearson / Dice / IoU of a translator on paired tiles",
        description="Coarsened targets vs predictions binarized at 0.5, summed in 8x8 boxes, "
                    "Pearson per channel per tile averaged over tiles; plus Dice and IoU; beside "
                    "a mean-prevalence baseline. Writes OUT/metrics.csv, OUT/pearson.png and the "
                    "specificity matrices OUT/specificity_{pearson,dice}.csv (virtime audit).")
    add_pairs_args(p, "report folder")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--weights", help="checkpoint (.safetensors with card, or official .pth)")
    src.add_argument("--demo", action="store_true", help="evaluate the bundled demo model")
    p.add_argument("--split", choices=["val", "all"], default="val",
                   help="held-out slides of the slide-level split (default) or every tile")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--update-card", action="store_true",
                   help="store the per-channel Pearson and tiers in the checkpoint's model card")
    add_quiet_arg(p)
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    import numpy as np

    from virtime.evaluation.evaluate import evaluate, write_report
    from virtime.models import load, load_demo
    from virtime.models.checkpoints import card_path_for

    model = load_demo(args.device) if args.demo else load(args.weights, device=args.device)
    result = evaluate(model, args.pairs_dir, split=args.split, val_fraction=args.val_fraction,
                      batch_size=args.batch_size, device=args.device,
                      show_progress=not args.quiet)
    csv, png = write_report(result, args.output)
    s = result.summary
    print(f"{'channel':<12}{'pearson':>9}{'baseline':>9}{'dice':>8}{'iou':>8}{'tiles':>7}")
    for r in s.itertuples():
        print(f"{r.channel:<12}{r.pearson:>9.3f}{r.baseline_pearson:>9.3f}{r.dice:>8.3f}"
              f"{r.iou:>8.3f}{r.n_tiles:>7d}")
    base = float(np.nanmean(s.set_index("channel").drop(["TRITC", "Cy5"]).baseline_pearson))
    print(f"mean protein Pearson {result.mean_pearson:.3f} (baseline {base:.3f}) over "
          f"{result.n_tiles} tiles; wrote {csv} and {png}")
    if args.update_card:
        card = model.card
        card.with_evaluation(result.pearson_dict(), split=args.split, n_tiles=result.n_tiles,
                             pairs=str(args.pairs_dir), mean_protein_pearson=result.mean_pearson)
        weights = model.card.weights_file
        target = card_path_for(args.weights) if args.weights else None
        if target is None or not str(args.weights).endswith(".safetensors"):
            from virtime.errors import InvalidArgumentError

            raise InvalidArgumentError(f"--update-card needs a .safetensors checkpoint ({weights})")
        card.save(target)
        print(f"updated {target}")
    return 0
