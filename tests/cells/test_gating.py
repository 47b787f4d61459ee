"""The gating table: shipped default, rule order (first match wins), flags, errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from virtime.cells import GatingTable, default_gating
from virtime.errors import InvalidArgumentError

_CHANNELS = ["CD3", "CD8", "CD4", "CD20", "CD138", "CD68", "CD14", "CK", "Ki67", "PD-L1"]


def _cells(*rows: str) -> pd.DataFrame:
    """One cell per string of positive channels, e.g. ``"CD3 CD8"``."""
    return pd.DataFrame([{f"{c}.positive": c in r.split() for c in _CHANNELS} for r in rows])


def test_default_table_ships_and_reads():
    g = default_gating()
    assert g.phenotypes == ("cd8_t", "cd4_t", "b_cell", "plasma", "macrophage", "tumour")
    assert g.flags == ("proliferating", "pdl1_tumour")
    assert list(g.summary()["name"])[:2] == ["cd8_t", "cd4_t"]


def test_first_match_wins_in_the_documented_order():
    cells = _cells("CD3 CD8", "CD3 CD4", "CD3 CD4 CD8", "CD3 CD8 CK", "CD20", "CD20 CD3 CD4",
                   "CD138", "CD138 CK", "CD68", "CD14", "CD68 CK", "CK", "", "CD3")
    phen, _ = default_gating().apply(cells)
    assert list(phen) == ["cd8_t", "cd4_t", "cd8_t", "cd8_t", "b_cell", "cd4_t", "plasma",
                          "tumour", "macrophage", "macrophage", "macrophage", "tumour", "other",
                          "other"]


def test_flags_are_independent_of_phenotype():
    phen, flags = default_gating().apply(_cells("CK Ki67 PD-L1", "CD3 CD8 Ki67 PD-L1", "PD-L1"))
    assert list(phen) == ["tumour", "cd8_t", "other"]
    assert list(flags["proliferating"]) == [True, True, False]
    assert list(flags["pdl1_tumour"]) == [True, False, False]  # PD-L1+ only counts on tumour


def test_a_user_table_with_another_order_gives_another_answer(tmp_path):
    path = tmp_path / "g.csv"
    path.write_text("# tumour first\nkind,name,rule\nphenotype,tumour,CK+\n"
                    "phenotype,cd8_t,CD3+ CD8+\n")
    phen, flags = GatingTable.from_csv(path).apply(_cells("CD3 CD8 CK", "CD3 CD8"))
    assert list(phen) == ["tumour", "cd8_t"] and flags == {}


@pytest.mark.parametrize("body, match", [
    ("kind,name,rule\nphenotype,x,CD999+\n", "cannot read term"),
    ("kind,name,rule\nphenotype,x,CD3+\nphenotype,x,CD8+\n", "unique"),
    ("kind,name,rule\nflag,f,phenotype=nope\n", "phenotype=nope"),
    ("kind,name,rule\nweird,x,CD3+\n", "kind"),
    ("name,rule\nx,CD3+\n", "columns"),
])
def test_bad_tables_are_refused(tmp_path, body, match):
    path = tmp_path / "g.csv"
    path.write_text(body)
    with pytest.raises(InvalidArgumentError, match=match):
        GatingTable.from_csv(path)


def test_missing_channel_is_an_error():
    with pytest.raises(InvalidArgumentError, match="no positivity for channel"):
        default_gating().apply(pd.DataFrame({"CD3.positive": np.ones(2, bool)}))
