"""One sentence saying which rule left an analysis empty, or skipped groups, and what to change.

An association table with no rows, or a survival run that skipped every group, is not an error:
the rules (smallest group, smallest class, fewest events) did their job. But the user must learn
which rule it was and which flag relaxes it, instead of a quiet "0 tests".
"""

from __future__ import annotations

import pandas as pd

__all__ = ["association_skip_reason", "survival_skip_reason"]


def _examples(rows: pd.DataFrame, limit: int = 3) -> str:
    shown = [f"{r.level}/{r.group} (n = {r.n})" for r in rows.head(limit).itertuples()]
    return ", ".join(shown) + (f" and {len(rows) - limit} more" if len(rows) > limit else "")


def association_skip_reason(skipped: pd.DataFrame, n_tests: int, min_patients: int,
                            min_per_class: int, n_attributes: int) -> str:
    """Why association tests were skipped ("" when none was), naming the flag to change."""
    if n_attributes == 0:
        return ("no test ran: the clinical table has no attribute columns (biomarkers, stage or "
                "continuous values) to test")
    if skipped.empty:
        return ""
    reason = skipped["reason"].astype(str)
    parts = []
    small = skipped[reason.str.contains("patients")].sort_values("n", ascending=False)
    if len(small):
        largest = int(small["n"].max())
        hint = (f"--min-patients {largest} (min_patients) would test the largest"
                if largest >= 3 else "too few patients to test at any setting")
        parts.append(f"{len(small)} group/attribute(s) had fewer than {min_patients} patients "
                     f"with the attribute known, e.g. {_examples(small)}: {hint}")
    cls = skipped[reason.str.contains("in a class")]
    if len(cls):
        parts.append(f"{len(cls)} binary attribute/group(s) had fewer than {min_per_class} "
                     f"patients in one class, e.g. {_examples(cls)}: lower --min-per-class "
                     "(min_per_class)")
    const = skipped[reason.str.contains("constant")]
    if len(const):
        parts.append(f"{len(const)} attribute/group(s) had one value only (nothing to test)")
    head = "no test ran" if n_tests == 0 else f"{len(skipped)} skipped"
    return f"{head}: " + "; ".join(parts)


def survival_skip_reason(skipped: pd.DataFrame, n_rows: int, min_patients: int,
                         min_events: int) -> str:
    """Why survival groups were skipped ("" when none was), naming the flags to change."""
    if skipped.empty:
        return ""
    shown = [f"{r.level}/{r.group} ({r.n} patients, {r.events} events)"
             for r in skipped.head(3).itertuples()]
    more = f" and {len(skipped) - 3} more" if len(skipped) > 3 else ""
    few_patients = bool((skipped["n"] < min_patients).any())
    few_events = bool((skipped["events"] < min_events).any())
    flags = [f for f, on in (("--min-patients (min_patients)", few_patients),
                             ("--min-events (min_events)", few_events)) if on]
    head = "no survival test ran" if n_rows == 0 else f"{len(skipped)} group(s) skipped"
    return (f"{head}: {', '.join(shown)}{more}; each group needs ≥ {min_patients} patients and "
            f"≥ {min_events} events — lower {' and '.join(flags)} to test them")
