"""Gain of OR combinations over the better single channel."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from virtime.errors import InvalidArgumentError
from virtime.features import or_gain


def test_or_gain_table():
    s = pd.Series({"CD138.density": 2.0, "CD68.density": 3.0, "CD138|CD68.or_density": 5.0,
                   "CD3.density": 4.0, "CD8.density": 1.0, "CD3|CD8.or_density": 3.5,
                   "CD3&CD8.and_density": 9.0, "CK.mean": 1.0, "CK|PD-1.or_density": 2.0})
    g = or_gain(s)
    assert list(g.index) == ["CD138|CD68.or_density", "CD3|CD8.or_density", "CK|PD-1.or_density"]
    assert g.loc["CD138|CD68.or_density", "gain"] == 2.0
    assert g.loc["CD3|CD8.or_density", "best_single"] == 4.0
    assert g.loc["CD3|CD8.or_density", "gain"] == -0.5
    assert math.isnan(g.loc["CK|PD-1.or_density", "gain"])  # singles missing: NaN, not 2.0
    a = or_gain(dict(s), combo="and")
    assert a.loc["CD3&CD8.and_density", "gain"] == 5.0
    assert (a["a"].tolist(), a["b"].tolist()) == (["CD3"], ["CD8"])
    with pytest.raises(InvalidArgumentError):
        or_gain(s, combo="xor")
