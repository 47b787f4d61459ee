"""Keeping tool results small: an agent's context is precious and a table can have 10⁵ rows.

Tables are returned as their top rows only (the full table is written to a file whose path the
result gives), and any result whose JSON exceeds the byte budget has its tables cut further until
it fits, with ``truncated`` saying so.
"""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["fit_result", "table_rows"]


def _clean(value: Any) -> Any:
    """JSON-safe scalars: NaN/inf become None, numpy scalars plain Python."""
    if hasattr(value, "item") and not isinstance(value, (list, dict, str)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def table_rows(frame: Any, limit: int) -> list[dict[str, Any]]:
    """The first ``limit`` rows of a DataFrame as JSON-ready dicts."""
    return [{str(k): _clean(v) for k, v in row.items()}
            for row in frame.head(limit).to_dict(orient="records")]


def fit_result(result: dict[str, Any], max_bytes: int) -> dict[str, Any]:
    """``result`` with its list values halved until its JSON is at most ``max_bytes``.

    Lists are cut from the end (the top-k rows keep their order); ``truncated`` is set when
    anything was cut. A result that cannot fit even with empty lists has them emptied.
    """
    size = len(json.dumps(result, default=str))
    if size <= max_bytes:
        return result
    result = dict(result, truncated=True)
    while size > max_bytes:
        lists = [k for k, v in result.items() if isinstance(v, list) and v]
        if not lists:
            break
        longest = max(lists, key=lambda k: len(json.dumps(result[k], default=str)))
        result[longest] = result[longest][: len(result[longest]) // 2]
        size = len(json.dumps(result, default=str))
    return result
