"""``virtime report``: one self-contained HTML file with every population analysis."""

from __future__ import annotations

import argparse

from virtime.cli._common import add_levels_arg, add_min_patients_arg, add_quiet_arg
from virtime.cli.validate import add_cohort_args, cohort_from_args

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("report", help="HTML report: cohort, spectrum, associations, "
                                             "survival, cross-cohort validation")
    add_cohort_args(p)
    add_cohort_args(p, prefix="validation-", required=False)
    p.add_argument("-o", "--output", required=True, help="report .html")
    p.add_argument("--tiers", help="JSON file mapping channel → confidence tier (model card); "
                                   "default: the audit's trust tiers when --audit is given")
    p.add_argument("--audit", action="store_true",
                   help="add the channel audit (composition, redundancy; see `virtime audit`)")
    p.add_argument("--evaluation", help="`virtime evaluate` output folder: the audit's "
                                        "specificity matrix and trust tiers (implies --audit)")
    add_levels_arg(p)
    add_min_patients_arg(p)
    p.add_argument("--no-survival", action="store_true",
                   help="leave out the survival section (default: included when the clinical "
                        "table has survival columns)")
    p.add_argument("--title", default="virtime population report",
                   help="report title (default: %(default)s)")
    p.add_argument("--gallery-feature", help="show the slides with the highest and lowest value "
                                             "of this feature (e.g. CD8.tumour_density)")
    p.add_argument("--slides-dir", help="translation output root OUT (one folder per slide), "
                                        "for --gallery-feature")
    p.add_argument("--gallery-n", type=int, default=1, help="slides at each end (1)")
    add_quiet_arg(p)
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from virtime.errors import InputDataError
    from virtime.report import load_tiers, write_report
    from virtime.stats import associate, cross_cohort_validation, join_features, survival_analysis

    # Before any work: fail fast.
    if args.gallery_feature and not args.slides_dir:
        raise InputDataError("--gallery-feature needs the slide folders: --slides-dir OUT")
    tiers = load_tiers(args.tiers) if args.tiers else None
    cohort = cohort_from_args(args)
    audit = _audit(args) if args.audit or args.evaluation else None
    if tiers is None and audit is not None:
        tiers = audit.tiers
    kw = dict(levels=tuple(args.levels), min_patients=args.min_patients,
              show_progress=not args.quiet)
    assoc = associate(cohort, **kw)
    surv = None
    if cohort.has_survival and not args.no_survival:
        surv = survival_analysis(cohort, show_progress=not args.quiet)
    val = None
    if bool(args.validation_features) != bool(args.validation_clinical):
        raise InputDataError("--validation-features and --validation-clinical go together")
    if args.validation_features:
        other = join_features(args.validation_features, args.validation_clinical,
                              aggregate=args.aggregate, feature_names=args.feature_columns)
        val = cross_cohort_validation(cohort, other, assoc, associate(other, **kw))
    extra = []
    if audit is not None:
        from virtime.report.audit import audit_section

        extra.append(audit_section(audit))
    extra += _site(cohort, surv is not None)
    if args.gallery_feature:
        from virtime.report.gallery import gallery_section

        extra.append(gallery_section(args.slides_dir, args.gallery_feature, n=args.gallery_n))
    path = write_report(args.output, cohort=cohort, associations=assoc, survival=surv,
                        validation=val, tiers=tiers, title=args.title, extra_sections=extra)
    print(f"report written to {path}")
    return 0


def _site(cohort, with_survival: bool) -> list:
    """The site section when the cohort has a site column with two or more sites."""
    from virtime.report.site import site_section
    from virtime.stats.site import find_site_column, site_predictability, site_signature

    from virtime.errors import InputDataError

    if find_site_column(cohort) is None:
        return []
    try:
        predictability = site_predictability(cohort, warn=False)
    except InputDataError as exc:  # e.g. a site with one patient: no section, one log line
        import logging

        logging.getLogger(__name__).warning("site section left out: %s", exc)
        return []
    signature = site_signature(cohort) if with_survival else None
    return [site_section(predictability, signature)]


def _audit(args: argparse.Namespace):
    """The channel audit of the slide-level features table (with the evaluation, if given)."""
    from virtime.evaluation.specificity import read_specificity
    from virtime.stats.audit import channel_audit, group_covariates
    from virtime.stats.validation import read_table

    feats, _ = read_table(args.features, "features")
    spec = read_specificity(args.evaluation) if args.evaluation else None
    return channel_audit(feats, specificity=spec, groups=group_covariates(feats, args.clinical))
