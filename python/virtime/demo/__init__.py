"""The end-to-end demo on a virtual population with planted biology (``virtime demo``).

:func:`run_demo` simulates two cohorts, translates every slide, analyses ground-truth and virtual
mIF the same way and scores how many planted effects each recovers (:mod:`.recovery`).
"""

from __future__ import annotations

from virtime.demo.recovery import recovery_table, score_associations, score_survival
from virtime.demo.run import DemoConfig, DemoResult, run_demo

__all__ = [
           "DemoConfig",
           "DemoResult",
           "recovery_table",
           "run_demo",
           "score_associations",
           "score_survival",
]
