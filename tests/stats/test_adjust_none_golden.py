"""``--adjust none`` reproduces the univariate tables byte for byte.

The golden files in ``tests/stats/data`` were written by ``virtime associate`` / ``survival`` before
adjustment existed, from the golden input tables in the same folder (a fixed-seed
``make_cohort`` with a planted CD8/KRAS effect in LUAD, a CD3 hazard and a partly-NaN feature).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from virtime.cli import main

DATA = Path(__file__).parent / "data"


@pytest.mark.parametrize("command,extra", [("associate", []), ("survival", ["--folds", "3"])])
def test_adjust_none_gives_the_univariate_table_byte_for_byte(tmp_path, command, extra):
    out = tmp_path / f"{command}.csv"
    assert main([command, "--features", str(DATA / "golden_features.csv"), "--clinical",
                 str(DATA / "golden_clinical.csv"), "-q", "-o", str(out), "--adjust", "none",
                 *extra]) == 0
    golden = f"golden_{'associations' if command == 'associate' else 'survival'}.csv"
    assert out.read_bytes() == (DATA / golden).read_bytes()
