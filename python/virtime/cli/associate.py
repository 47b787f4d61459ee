"""``virtime associate``: feature × clinical-attribute associations at three levels."""

from __future__ import annotations

import argparse

from virtime.cli._common import (
    LEVELS,
    add_adjust_arg,
    add_min_patients_arg,
    add_quiet_arg,
    add_stats_args,
)
from virtime.cli.validate import cohort_from_args

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("associate", help="associations of features with clinical attributes")
    add_stats_args(p, "association")
    p.add_argument("--plot", help="bubble-grid PNG of the given --plot-level")
    p.add_argument("--plot-level", default="pan-cancer", choices=LEVELS,
                   help="cohort level drawn by --plot (default: pan-cancer)")
    add_min_patients_arg(p)
    p.add_argument("--min-per-class", type=int, default=5,
                   help="smallest biomarker class within a group (5)")
    p.add_argument("--correction", choices=["bh", "holm", "bonferroni"], default="bh",
                   help="multiple-testing correction of the q values (default: bh, "
                        "Benjamini-Hochberg)")
    p.add_argument("--stage-test", choices=["spearman", "kruskal"], default="spearman",
                   help="test of features against stage: ordered (spearman) or not (kruskal) "
                        "(default: spearman)")
    p.add_argument("--alpha", type=float, default=0.05,
                   help="q value below which an association counts as significant (0.05)")
    add_adjust_arg(p)
    add_quiet_arg(p)
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from virtime.cli._common import write_stats_table
    from virtime.stats import AssociationConfig, associate

    cohort = cohort_from_args(args)
    cfg = AssociationConfig(levels=tuple(args.levels), min_patients=args.min_patients,
                            min_per_class=args.min_per_class, correction=args.correction,
                            stage_test=args.stage_test, alpha=args.alpha,
                            show_progress=not args.quiet, adjust=args.adjust)
    res = associate(cohort, cfg)
    write_stats_table(res.summary, args.output, args)
    if args.plot:
        from virtime.features.plots import save_figure
        from virtime.stats.plots import bubble_grid

        save_figure(bubble_grid(res, level=args.plot_level), args.plot, dpi=120)  # atomic
    counts = res.counts()
    print(f"{len(res.summary)} tests, {int(counts['significant'].sum())} significant at "
          f"q < {args.alpha}, {res.excluded} excluded (undefined p) → {args.output}")
    if res.skip_reason():
        print(res.skip_reason())
    _print_controls(res)
    return 0


def _print_controls(res) -> None:
    """One line on the negative controls (TRITC, Cy5)."""
    if res.controls.empty:
        print("negative controls: no TRITC/Cy5 features in the table, not run")
        return
    flags = res.control_like()
    q = res.summary["q_adj" if "q_adj" in res.summary.columns else "q"]
    c = res.controls
    print(f"negative controls (TRITC, Cy5): {int(flags.fillna(False).sum())} of "
          f"{int((q < res.config.alpha).sum())} discoveries are control_like; protein features "
          f"beat the strongest background in {int(c['n_beating'].sum())} of "
          f"{int(c['n_protein'].sum())} tests")
