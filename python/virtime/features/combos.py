"""Gain of a channel-pair combination over the better single channel, in association strength.

The GigaTIME paper reports that OR combinations of two channels (e.g. CD138|CD68) associate with
clinical attributes more strongly than either channel alone. Given any per-feature strength
(|effect size|, -log10 p, ...) computed by the statistics stage, :func:`or_gain` tabulates
``gain = strength(A|B.or_density) - max(strength(A.density), strength(B.density))``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from virtime.errors import InvalidArgumentError

__all__ = ["or_gain"]

_SUFFIX = {"or": ("|", ".or_density"), "and": ("&", ".and_density")}


def or_gain(
    strengths: Mapping[str, float] | pd.Series,
    *,
    single_metric: str = "density",
    combo: str = "or",
) -> pd.DataFrame:
    """Gain table of every pair combination present in ``strengths``.

    Parameters
    ----------
    strengths : mapping or Series
        Feature column name -> association strength (larger = stronger), e.g. ``-log10 p``.
        Pairs are the keys ``"A|B.or_density"`` (or ``"A&B.and_density"`` with ``combo="and"``);
        the single channels are ``"A.<single_metric>"``.
    single_metric : str
        Metric of the single channels the pair is compared with.
    combo : {"or", "and"}
        Which combination to tabulate.

    Returns
    -------
    DataFrame
        Indexed by the pair column, with ``a, b, pair_strength, a_strength, b_strength,
        best_single, gain``, sorted by decreasing gain; a missing or NaN single strength makes the
        gain NaN (never a silent comparison with one channel only).
    """
    if combo not in _SUFFIX:
        raise InvalidArgumentError(f"or_gain: combo must be 'or' or 'and', got {combo!r}")
    sep, suffix = _SUFFIX[combo]
    s = pd.Series(strengths, dtype=float)
    rows = []
    for key, value in s.items():
        key = str(key)
        if not key.endswith(suffix) or sep not in key:
            continue
        a, b = key[: -len(suffix)].split(sep, 1)
        sa = s.get(f"{a}.{single_metric}", np.nan)
        sb = s.get(f"{b}.{single_metric}", np.nan)
        best = max(sa, sb) if not (np.isnan(sa) or np.isnan(sb)) else np.nan
        rows.append((key, a, b, value, sa, sb, best, value - best))
    cols = ["pair", "a", "b", "pair_strength", "a_strength", "b_strength", "best_single", "gain"]
    table = pd.DataFrame(rows, columns=cols).set_index("pair")
    return table.sort_values("gain", ascending=False, na_position="last")
