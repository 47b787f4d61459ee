"""``virtime validate --features F --clinical C``: checks the cohort tables and their join."""

from __future__ import annotations

import argparse

__all__ = ["add_cohort_args", "cohort_from_args", "register"]


def add_cohort_args(p: argparse.ArgumentParser, *, prefix: str = "", required: bool = True) -> None:
    """--features/--clinical/--aggregate (shared by the statistics commands)."""
    p.add_argument(f"--{prefix}features", required=required,
                   help="features table (Parquet/CSV): slide_id, patient_id, <channel>.<metric>")
    p.add_argument(f"--{prefix}clinical", required=required,
                   help="clinical table (CSV/Parquet): patient_id, cancer_type, subtype, …")
    if not prefix:
        p.add_argument("--aggregate", choices=["mean", "median", "max", "min"], default="mean",
                       help="combine a patient's slides by (mean)")
        p.add_argument("--strict", action="store_true",
                       help="fail if the join loses any patient")
        p.add_argument("--keep-qc-failed", action="store_true",
                       help="also analyse slides flagged qc_failed_share_exceeded (failed tiles "
                            "over too much tissue; left out by default)")
        p.add_argument("--feature-columns", nargs="+", metavar="COLUMN", default=None,
                       help="analyse exactly these columns of the features table (default: "
                            "every known virtime feature; other dotted columns are ignored "
                            "with a warning)")


def cohort_from_args(args: argparse.Namespace, prefix: str = ""):
    """Loads and joins the tables named by :func:`add_cohort_args`."""
    from virtime.stats import join_features

    key = prefix.replace("-", "_")
    adjust = getattr(args, "adjust", None)
    covariates = () if adjust in (None, "auto", "none") else tuple(adjust.split(","))
    cohort = join_features(getattr(args, f"{key}features"), getattr(args, f"{key}clinical"),
                           aggregate=args.aggregate, strict=args.strict,
                           feature_names=args.feature_columns,
                           keep_qc_failed=getattr(args, "keep_qc_failed", False),
                           covariates=covariates)
    if cohort.qc_excluded:
        ids = cohort.qc_excluded
        print(f"left out {len(ids)} slide(s) flagged qc_failed_share_exceeded "
              f"({', '.join(ids[:3])}{' …' if len(ids) > 3 else ''}); --keep-qc-failed keeps them")
    return cohort


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "validate", help="validate a features table and a clinical table",
        description="Checks and joins the tables. With a site column (site, hospital, centre, "
                    "center, tss, or --site): how well the features predict the site "
                    "(cross-validated balanced accuracy, warning above chance + 0.2) and, with "
                    "survival, the out-of-fold signature with k-fold and leave-one-site-out "
                    "folds and with site partialled out (log-rank p, Harrell's C, C within "
                    "sites).")
    add_cohort_args(p)
    p.add_argument("--site", help="site column (default: the first of site, hospital, centre, "
                                  "center, tss with two or more sites)")
    p.add_argument("--no-site-signature", action="store_true",
                   help="skip the site-aware survival signature (the slow part)")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    cohort = cohort_from_args(args)
    d = cohort.data
    print(f"ok: {len(d)} patients, {d['cancer_type'].nunique()} cancer types, "
          f"{d['subtype'].nunique()} subtypes, {len(cohort.features)} features")
    print("attributes: " + (", ".join(f"{a} ({k})" for a, k in cohort.attributes.items())
                            or "none"))
    for ids, what in ((cohort.features_only, "features only"),
                      (cohort.clinical_only, "clinical only")):
        if ids:
            print(f"lost in join ({what}): {len(ids)}: {', '.join(ids[:10])}"
                  + (" …" if len(ids) > 10 else ""))
    _site_checks(cohort, args)
    return 0


def _site_checks(cohort, args: argparse.Namespace) -> None:
    """Site predictability and the site-aware signature, when the cohort has sites."""
    from virtime.stats.site import find_site_column, site_predictability, site_signature

    from virtime.errors import InputDataError

    site = args.site or find_site_column(cohort)
    if site is None:
        return
    if site not in cohort.data.columns:
        raise InputDataError(f"site column {site!r} not in the clinical table")
    try:
        res = site_predictability(cohort, site=site, warn=False)
    except InputDataError as exc:  # e.g. a site with one patient: the tables are still valid
        print(f"site check skipped: {exc}")
        return
    print(("warning: " if res.warn else "") + res.message)
    if cohort.has_survival and not args.no_site_signature:
        table = site_signature(cohort, site=site)
        print("out-of-fold survival signature:")
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
