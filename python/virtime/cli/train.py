"""``virtime train``: train a translator on a pairs folder (resumes an interrupted run)."""

from __future__ import annotations

import argparse

from virtime.cli._common import add_pairs_args, add_quiet_arg

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train", help="train a GigaTIME translator on paired tiles",
        description="GigaTIME objective (0.5 BCE + 1 - soft Dice on 1/8-coarsened targets), Adam "
                    "+ cosine schedule; a checkpoint every epoch in RUN_DIR; the best model by "
                    "mean validation Pearson is RUN_DIR/best.safetensors + best.json.")
    add_pairs_args(p, "run folder")
    p.add_argument("--architecture", default="gigatime", choices=["gigatime"],
                   help="translator architecture (default: gigatime)")
    p.add_argument("--filters", type=int, nargs="+", default=[8, 16, 32, 64, 128],
                   help="UNet++ widths (official: 32 64 128 256 512)")
    p.add_argument("--epochs", type=int, default=20, help="training epochs (20)")
    p.add_argument("--steps-per-epoch", type=int, default=None,
                   help="default: one pass over the training tiles")
    p.add_argument("--crop", type=int, default=256, help="training crop size in pixels")
    p.add_argument("--window", type=int, default=256, help="inference window for the card")
    p.add_argument("--lr", type=float, default=1e-3, help="initial learning rate (1e-3)")
    p.add_argument("--lr-min", type=float, default=1e-5,
                   help="learning rate at the end of the cosine schedule (1e-5)")
    p.add_argument("--seed", type=int, default=0, help="seed of initialisation and shuffling (0)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument("--no-amp", action="store_true", help="disable mixed precision on GPU")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--restart", action="store_true", help="ignore an existing checkpoint")
    add_quiet_arg(p)
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from virtime.training.train import TrainConfig, train

    config = TrainConfig(
        architecture=args.architecture, filters=tuple(args.filters), epochs=args.epochs,
        batch_size=args.batch_size, crop=args.crop, window=args.window, lr=args.lr,
        lr_min=args.lr_min, val_fraction=args.val_fraction,
        steps_per_epoch=args.steps_per_epoch, seed=args.seed, device=args.device,
        amp=not args.no_amp, threads=args.threads,
    )

    def report(row: dict[str, float]) -> None:
        print(f"epoch {int(row['epoch'])}: loss {row['loss']:.4f} (bce {row['bce']:.4f}, "
              f"dice {row['dice']:.3f}) val Pearson {row['val_pearson']:.3f} "
              f"(baseline {row['val_baseline_pearson']:.3f}) lr {row['lr']:.2e} "
              f"{row['seconds']:.0f}s", flush=True)

    result = train(args.pairs_dir, args.output, config, resume=not args.restart,
                   on_epoch=report, show_progress=not args.quiet)
    print(f"best mean validation Pearson {result.best_score:.3f}: {result.best_path}")
    return 0
