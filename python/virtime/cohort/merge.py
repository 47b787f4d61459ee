"""The cohort features table: every finished slide's features joined with its patient.

One row per slide (``done`` or ``skipped`` in the ledger) with ``slide_id`` and ``patient_id``
first, then the feature columns of ``OUT/<slide_id>/features.parquet``; the statistics commands
read it directly (they aggregate slides per patient). The merge itself is
:func:`virtime.features.merge_features` (the one implementation); this module reads the ledger.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from virtime.errors import InputDataError
from virtime.features.merge import COHORT_FEATURES_NAME

__all__ = ["COHORT_FEATURES_NAME", "merge_cohort_features"]


def merge_cohort_features(
    out_root: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    *,
    ledger: pd.DataFrame | None = None,
) -> Path:
    """Joins the features of every finished slide of a cohort run into one table.

    ``merge_features(out_root, output, ledger=read_ledger(out_root))``, with the cohort's checks.

    Parameters
    ----------
    out_root
        The cohort's output root (holds the ledger and one folder per slide).
    output
        Where to write; default ``OUT/cohort_features.parquet``.
    ledger
        The ledger table (read from ``out_root`` when not given).

    Raises InputDataError (one line naming the path) when ``out_root`` is not a cohort output
    folder, its ledger cannot be read, ``output`` is a folder (e.g. a slide folder named like
    the cohort table) or no finished slide has features; nothing is written then.
    """
    from virtime.cohort.ledger import read_ledger
    from virtime.features.merge import merge_features

    root = Path(out_root)
    if ledger is None:
        if not root.is_dir():
            raise InputDataError(f"{root}: not a cohort output folder "
                                 f"({'not found' if not root.exists() else 'not a directory'})")
        try:
            ledger = read_ledger(root)
        except FileNotFoundError as exc:
            raise InputDataError(f"{root}: not a cohort output folder (no cohort ledger; run "
                                 f"`virtime cohort run` first)") from exc
        except Exception as exc:  # a damaged ledger: pyarrow/json errors vary
            raise InputDataError(f"{root}: cannot read the cohort ledger: "
                                 f"{' '.join(str(exc).split())[:200]}") from exc
    return merge_features(root, output, ledger=ledger)
