"""Every warning virtime raises is a ``VirtimeWarning`` (``StatisticalWarning`` for statistical
caveats), so a user can silence or escalate virtime's warnings and no one else's."""

from __future__ import annotations

import ast
import warnings
from pathlib import Path

import pytest

import virtime
from virtime.errors import NoTissueWarning, StatisticalWarning, VirtimeWarning

PACKAGE_DIR = Path(virtime.__file__).parent


def _warn_calls() -> list[tuple[str, int, str | None]]:
    """(file, line, category as written) of every ``warnings.warn(...)`` in the package."""
    found = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "warn"
                    and getattr(node.func.value, "id", None) == "warnings"):
                continue
            cat = node.args[1] if len(node.args) > 1 else next(
                (k.value for k in node.keywords if k.arg == "category"), None)
            found.append((str(path.relative_to(PACKAGE_DIR)), node.lineno,
                          None if cat is None else ast.unparse(cat)))
    return found


def test_every_warning_names_a_virtime_category() -> None:
    calls = _warn_calls()
    assert len(calls) > 10  # the walk found the package's warnings
    ours = {"VirtimeWarning", "StatisticalWarning", "NoTissueWarning"}
    assert [c for c in calls if c[2] not in ours] == []


def test_categories_filter_apart() -> None:
    assert issubclass(StatisticalWarning, VirtimeWarning)
    assert issubclass(NoTissueWarning, VirtimeWarning)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", category=VirtimeWarning)
        warnings.warn("caveat", StatisticalWarning, stacklevel=1)  # silenced with its parent
    assert seen == []
    with pytest.raises(UserWarning):  # still a UserWarning for generic filters
        warnings.warn("caveat", StatisticalWarning, stacklevel=1)
