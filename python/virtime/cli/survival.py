"""``virtime survival``: log-rank/Cox per channel and the out-of-fold signature."""

from __future__ import annotations

import argparse

from virtime.cli._common import (
    add_adjust_arg,
    add_min_patients_arg,
    add_quiet_arg,
    add_stats_args,
)
from virtime.cli.validate import cohort_from_args

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("survival", help="survival per channel and combined signature")
    add_stats_args(p, "survival", levels=["pan-cancer", "cancer_type"])
    p.add_argument("--scores", help="also write the signature's out-of-fold risk per patient")
    p.add_argument("--plot", help="bar plot PNG of −log10 log-rank p (pan-cancer)")
    p.add_argument("--split", choices=["median", "tertiles"], default="median",
                   help="how patients are grouped by each feature for the log-rank test "
                        "(default: median)")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds (5)")
    p.add_argument("--penalizer", type=float, default=0.1, help="signature ridge penalty (0.1)")
    p.add_argument("--permutations", type=int, default=0,
                   help="permutation p of the signature with this many shuffles (0: off)")
    add_min_patients_arg(p, 30)
    p.add_argument("--min-events", type=int, default=10,
                   help="fewest events (deaths) a group needs to be tested (10)")
    p.add_argument("--no-signature", action="store_true", help="skip the combined signature")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the cross-validation folds and permutations (0)")
    add_adjust_arg(p)
    add_quiet_arg(p)
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from virtime.cli._common import write_stats_table
    from virtime.stats import SurvivalConfig, survival_analysis

    cohort = cohort_from_args(args)
    cfg = SurvivalConfig(levels=tuple(args.levels), split=args.split, folds=args.folds,
                         signature_penalizer=args.penalizer, min_patients=args.min_patients,
                         min_events=args.min_events, signature=not args.no_signature,
                         signature_permutations=args.permutations, seed=args.seed,
                         show_progress=not args.quiet, adjust=args.adjust)
    res = survival_analysis(cohort, cfg)
    write_stats_table(res.summary, args.output, args)
    if args.scores:
        write_stats_table(res.signature_scores, args.scores, args)
    if args.plot:
        from virtime.features.plots import save_figure
        from virtime.stats.plots import survival_bar_plot

        save_figure(survival_bar_plot(res), args.plot, dpi=120)  # atomic
    print(f"{len(res.summary)} rows, {len(res.failures)} failed fit(s), "
          f"{len(res.skipped)} group(s) skipped → {args.output}")
    if res.skip_reason():
        print(res.skip_reason())
    c = res.control_comparison
    print("negative controls: no TRITC/Cy5 density in the table, not run" if c.empty else
          f"negative controls (TRITC, Cy5): channels beat the strongest background in "
          f"{int(c['n_beating'].sum())} of {int(c['n_protein'].sum())} Cox fits")
    return 0
