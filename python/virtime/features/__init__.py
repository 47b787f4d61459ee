"""Slide features from virtual mIF probability maps: numba spatial metrics, streamed per tile.

See :mod:`virtime.features.partials` for the metric definitions.
"""

from __future__ import annotations

from virtime.features.combos import or_gain
from virtime.features.contexture import PHENOTYPES, ContextureConfig, immune_contexture
from virtime.features.merge import merge_features
from virtime.features.partials import METRICS, SlideFeatureAccumulator, pair_columns
from virtime.features.table import (
    compute_slide_features,
    features_from_outputs,
    load_slide_outputs,
    read_features,
    write_features,
)

__all__ = [
    "METRICS",
    "PHENOTYPES",
    "ContextureConfig",
    "SlideFeatureAccumulator",
    "compute_slide_features",
    "features_from_outputs",
    "immune_contexture",
    "load_slide_outputs",
    "merge_features",
    "or_gain",
    "pair_columns",
    "read_features",
    "write_features",
]
