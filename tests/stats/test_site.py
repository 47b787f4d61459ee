"""Site-aware validation: site predictability with a planted site look (warning) and without
(chance), and the signature under leave-one-site-out folds when only the site predicts survival."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines.utils import concordance_index

from virtime.errors import InputDataError, StatisticalWarning
from virtime.stats import join_features
from virtime.stats.site import (
    SITE_WARNING_MARGIN,
    find_site_column,
    partial_out,
    site_predictability,
    site_signature,
)

SITES = np.array(["H1", "H2", "H3"])


def _cohort(rng, cohort_factory, *, site_shift: float = 0.0, site_hazard: float = 0.0,
            feature_hazard: float = 0.0, per_subtype: int = 30):
    """Three sites; ``site_shift`` (SD) moves six channels by site; survival from the site and/or
    from CD8."""
    feats, clin = cohort_factory(rng, per_subtype=per_subtype)
    n = len(clin)
    site_idx = rng.integers(0, 3, n)
    clin["site"] = SITES[site_idx]
    for k, ch in enumerate(("CD8", "CD3", "CK", "CD68", "Ki67", "CD20")):
        feats[f"{ch}.density"] += site_shift * np.cos(site_idx * 2.1 + k)
    lin = site_hazard * (site_idx - 1) + feature_hazard * feats["CD8.density"].to_numpy()
    t = rng.exponential(365.0 * np.exp(-lin))
    c = rng.exponential(2 * 365.0, size=n)
    clin["os_time"], clin["os_event"] = np.minimum(t, c).round(1), (t <= c).astype(int)
    return join_features(feats, clin)


def test_planted_site_look_is_predictable_and_warns(rng, cohort_factory):
    cohort = _cohort(rng, cohort_factory, site_shift=1.5)
    assert find_site_column(cohort) == "site"
    with pytest.warns(StatisticalWarning, match="balanced accuracy"):
        res = site_predictability(cohort)
    assert res.chance == pytest.approx(1 / 3) and res.n_sites == 3 and res.n == 240
    assert res.balanced_accuracy > res.chance + SITE_WARNING_MARGIN and res.warn
    assert res.threshold == pytest.approx(1 / 3 + 0.2)


def test_no_site_effect_is_near_chance_without_warning(rng, cohort_factory):
    cohort = _cohort(rng, cohort_factory)
    res = site_predictability(cohort)  # filterwarnings=error: a warning would fail here
    assert abs(res.balanced_accuracy - 1 / 3) < 0.12 and not res.warn


def test_site_prediction_refuses_a_cohort_without_sites(rng, cohort_factory):
    feats, clin = cohort_factory(rng, per_subtype=5)
    cohort = join_features(feats, clin)
    assert find_site_column(cohort) is None
    with pytest.raises(InputDataError, match="no site column"):
        site_predictability(cohort)


def test_partial_out_equals_group_centering(rng):
    x = rng.normal(size=(30, 2))
    g = pd.DataFrame({"site": np.repeat(["a", "b", "c"], 10)})
    ref = x - pd.DataFrame(x).groupby(g["site"].to_numpy()).transform("mean").to_numpy()
    np.testing.assert_allclose(partial_out(x, g), ref, atol=1e-12)


def test_site_only_survival_looks_prognostic_in_k_fold_but_not_across_sites(rng, cohort_factory):
    cohort = _cohort(rng, cohort_factory, site_shift=1.5, site_hazard=1.2, per_subtype=40)
    table = site_signature(cohort, folds=5).set_index("validation")
    assert list(table.index) == ["k-fold", "leave-one-site-out", "k-fold, adjusted for site"]
    assert table.loc["leave-one-site-out", "folds"] == 3
    assert (table["n"] == 320).all() and (table["status"] == "ok").all()
    # k-fold learns the site look, which predicts survival; held-out sites or features with the
    # site removed leave nothing
    assert table.loc["k-fold", "c_index"] > 0.6
    assert table.loc["k-fold", "c_within_site"] < 0.56
    assert table.loc["k-fold, adjusted for site", "c_index"] < 0.56
    assert table.loc["leave-one-site-out", "c_within_site"] < 0.56


def test_planted_biology_survives_every_validation(rng, cohort_factory):
    cohort = _cohort(rng, cohort_factory, site_shift=1.5, feature_hazard=0.8, per_subtype=40)
    table = site_signature(cohort, folds=5).set_index("validation")
    assert (table["c_index"] > 0.6).all() and (table["logrank_p"] < 0.01).all()
    # the C within sites is lifelines' C on each site's patients, weighted by patients
    d = cohort.data
    x = d["CD8.density"].to_numpy()
    per = [(concordance_index(d.os_time[m], -x[m], d.os_event[m]), m.sum())
           for m in (d["site"] == s for s in SITES)]
    ref = sum(c * k for c, k in per) / sum(k for _, k in per)
    assert abs(table.loc["k-fold, adjusted for site", "c_within_site"] - ref) < 0.05


def test_validate_cli_reports_site_predictability_and_the_signature(rng, cohort_factory,
                                                                     tmp_path, capsys):
    from virtime.cli import main

    feats, clin = cohort_factory(rng, per_subtype=20)
    site_idx = rng.integers(0, 2, len(clin))
    clin["hospital"] = np.where(site_idx == 1, "B", "A")
    feats["CD8.density"] += 2.0 * site_idx
    feats.to_parquet(tmp_path / "f.parquet")
    clin.to_csv(tmp_path / "c.csv", index=False)
    args = ["validate", "--features", str(tmp_path / "f.parquet"), "--clinical",
            str(tmp_path / "c.csv")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "warning: site (hospital) predictable" in out and "2 sites, chance 0.50" in out
    assert "leave-one-site-out" in out and "adjusted for hospital" in out
    assert main([*args, "--site", "scanner"]) == 2
    assert "site column 'scanner' not in the clinical table" in capsys.readouterr().err


def test_report_has_a_site_section_when_the_cohort_has_sites(rng, cohort_factory, tmp_path):
    from virtime.cli import main

    feats, clin = cohort_factory(rng, per_subtype=15)
    clin["site"] = np.where(np.arange(len(clin)) % 2 == 0, "A", "B")
    feats.to_parquet(tmp_path / "f.parquet")
    clin.to_csv(tmp_path / "c.csv", index=False)
    assert main(["report", "--features", str(tmp_path / "f.parquet"), "--clinical",
                 str(tmp_path / "c.csv"), "-o", str(tmp_path / "r.html"), "--levels",
                 "pan-cancer", "-q"]) == 0
    html = (tmp_path / "r.html").read_text()
    assert "<h2>Site</h2>" in html and "leave-one-site-out" in html
    assert "Warning: site" not in html  # no site effect planted


def test_validate_skips_the_site_check_when_a_site_has_one_patient(rng, cohort_factory,
                                                                     tmp_path, capsys):
    from virtime.cli import main

    feats, clin = cohort_factory(rng, per_subtype=5)
    clin["site"] = "A"
    clin.loc[0, "site"] = "B"
    feats.to_parquet(tmp_path / "f.parquet")
    clin.to_csv(tmp_path / "c.csv", index=False)
    assert main(["validate", "--features", str(tmp_path / "f.parquet"), "--clinical",
                 str(tmp_path / "c.csv")]) == 0
    assert "site check skipped: site prediction needs ≥ 2 sites" in capsys.readouterr().out
