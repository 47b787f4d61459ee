"""``virtime audit --features F``: how much of each channel is composition, redundancy or off-target."""

from __future__ import annotations

import argparse

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "audit", help="channel audit: composition R², redundancy, specificity, trust tiers",
        description="Per channel (slide-level <channel>.density): R² and partial correlations "
                    "on cellularity (DAPI density), tissue area and the background channels; "
                    "the largest |r| with another channel; with --evaluation (a `virtime "
                    "evaluate` output folder), the specificity matrix and channels that match "
                    "another marker better than their own. Prints the table and the trust tiers.")
    p.add_argument("--features", required=True,
                   help="features table (Parquet/CSV), one row per slide")
    p.add_argument("--clinical", help="clinical table: adds the share of each channel's "
                                      "variance that cancer type and site explain")
    p.add_argument("--evaluation", help="folder `virtime evaluate` wrote (specificity_*.csv)")
    p.add_argument("--metric", default="density", help="channel metric audited (density)")
    p.add_argument("-o", "--output", help="audit table (.csv/.tsv/.parquet)")
    p.add_argument("--tiers-json", help="write the derived trust tiers as JSON (for --tiers)")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    import json

    from virtime.evaluation.specificity import read_specificity
    from virtime.stats.audit import channel_audit, group_covariates
    from virtime.stats.validation import read_table

    feats, _ = read_table(args.features, "features")
    spec = read_specificity(args.evaluation) if args.evaluation else None
    groups = group_covariates(feats, args.clinical) if args.clinical else None
    audit = channel_audit(feats, metric=args.metric, specificity=spec, groups=groups)
    s = audit.summary
    cols = [c for c in ("channel", "n", "r2_composition", "max_abs_r_other", "most_similar",
                        "own_pearson", "best_other", "best_other_pearson", "tier") if c in s]
    print(f"covariates: {', '.join(audit.covariates) or 'none'}")
    print(s[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    flagged = {k: list(s.loc[s[k], "channel"]) for k in ("composition_driven", "redundant",
                                                            "off_target") if k in s}
    for k, names in flagged.items():
        print(f"{k}: {', '.join(names) or 'none'}")
    if args.output:
        from virtime.stats.io import write_table

        write_table(s, args.output)
        print(f"wrote {args.output}")
    if args.tiers_json:
        from virtime.io import atomic_path

        with atomic_path(args.tiers_json) as tmp:
            tmp.write_text(json.dumps(audit.tiers, indent=1), encoding="utf-8")
        print(f"wrote {args.tiers_json}")
    return 0
