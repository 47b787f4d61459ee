"""Population-scale translation on Dask distributed: manifest in, per-slide outputs, ledger and
cohort features table out (``virtime cohort run|merge|status``).

>>> from virtime.cohort import run_cohort, CohortOptions       # doctest: +SKIP
>>> from virtime import TranslateConfig
>>> result = run_cohort("slides.csv", "model.pth", "out/", TranslateConfig(),
...                     options=CohortOptions(scheduler="tcp://head:8786"))
>>> result.summary                  # slides per status (and their tiles, seconds)
>>> result.counts["done"], result.features_path
"""

from __future__ import annotations

from virtime.cohort.ledger import LEDGER_NAME, STATUSES, Ledger, ledger_summary, read_ledger
from virtime.cohort.manifest import MANIFEST_COLUMNS, read_manifest, validate_manifest
from virtime.cohort.runner import (
    CohortOptions,
    CohortResult,
    open_client,
    run_cohort,
    slide_is_complete,
)
from virtime.features.merge import COHORT_FEATURES_NAME

__all__ = [
    "COHORT_FEATURES_NAME",
    "LEDGER_NAME",
    "MANIFEST_COLUMNS",
    "STATUSES",
    "CohortOptions",
    "CohortResult",
    "Ledger",
    "ledger_summary",
    "open_client",
    "read_ledger",
    "read_manifest",
    "run_cohort",
    "slide_is_complete",
    "validate_manifest",
]
