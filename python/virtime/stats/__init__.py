"""Population statistics: validation, associations, survival, signature and cross-cohort checks.

Typical use::

    from virtime.stats import join_features, associate, survival_analysis
    cohort = join_features("features.parquet", "clinical.csv")
    assoc = associate(cohort)             # assoc.summary: level, group, feature, attribute, …, q
    surv = survival_analysis(cohort)      # surv.summary: per channel log-rank / Cox, + signature

Every analysis returns a result object with a ``summary`` DataFrame. Associations and survival
are also adjusted for confounders (``adjust=``, :mod:`virtime.stats.covariates`) and compared with
the background channels as negative controls (:mod:`virtime.stats.controls`).
"""

from __future__ import annotations

from virtime.stats.associations import AssociationConfig, AssociationResult, associate
from virtime.stats.comparisons import combination_comparison, metric_comparison
from virtime.stats.controls import control_comparison, control_like
from virtime.stats.covariates import Design, design_for_group, resolve_covariates
from virtime.stats.cox import CoxResult, cox_fit
from virtime.stats.logrank import LogrankResult, logrank, split_groups
from virtime.stats.multiple_testing import adjust_by_family, adjust_pvalues
from virtime.stats.signature import SignatureResult, signature_risk
from virtime.stats.survival import SurvivalConfig, SurvivalResult, survival_analysis
from virtime.stats.validation import (
    ClinicalTable,
    Cohort,
    aggregate_slides,
    join_features,
    load_clinical,
    parse_stage,
    validate_features,
    validate_survival,
)
from virtime.stats.validation_cohorts import CrossCohortResult, cross_cohort_validation

__all__ = [
    "AssociationConfig",
    "AssociationResult",
    "ClinicalTable",
    "Cohort",
    "CoxResult",
    "CrossCohortResult",
    "Design",
    "LogrankResult",
    "SignatureResult",
    "SurvivalConfig",
    "SurvivalResult",
    "adjust_by_family",
    "adjust_pvalues",
    "aggregate_slides",
    "associate",
    "combination_comparison",
    "control_comparison",
    "control_like",
    "cox_fit",
    "cross_cohort_validation",
    "design_for_group",
    "join_features",
    "load_clinical",
    "logrank",
    "metric_comparison",
    "parse_stage",
    "resolve_covariates",
    "signature_risk",
    "split_groups",
    "survival_analysis",
    "validate_features",
    "validate_survival",
]
