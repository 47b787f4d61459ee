"""Slide features from virtual mIF probability maps: numba spatial metrics, streamed per tile.

See :mod:`virtime.features.partials` for the metric definitions.
"""

from __future__ import annotations

from virtime.features.combos import or_gain
from virtime.features.contexture import PHENOTYPES, ContextureConfig, immune_contexture
from virtime.features.partials import METRICS, SlideFeatureAccumulator, pair_columns
from virtime.features.table import (
    compute_slide_features,
    features_from_outputs,
    load_slide_outputs,
    merge_cohort,
    read_features,
    write_features,
)

__all__ = [
    "SlideFeatureAccumulator",
    "METRICS",
    "pair_columns",
    "ContextureConfig",
    "immune_contexture",
    "PHENOTYPES",
    "or_gain",
    "compute_slide_features",
    "load_slide_outputs",
    "features_from_outputs",
    "write_features",
    "read_features",
    "merge_cohort",
]
