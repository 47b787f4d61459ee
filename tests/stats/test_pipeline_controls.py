"""End to end: slide features computed by virtime.features carry TRITC/Cy5, and ``associate``
tests them as negative controls, never as discoveries or members of a family."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from virtime.channels import BACKGROUND_CHANNELS, CHANNEL_NAMES, PROTEIN_CHANNELS
from virtime.cli import main
from virtime.features import METRICS, compute_slide_features, pair_columns, write_features
from virtime.stats import associate, join_features

N_PATIENTS = 40
SIDE = 24  # px per slide side, at 1 µm/px; 8 µm bins: 3 x 3


def _slide(rng: np.random.Generator, positive: bool) -> np.ndarray:
    """23 uint8 channels: each pixel positive (200) with a per-channel rate, else 0..99. CD8 is
    positive far more often on attribute-positive slides, TRITC a little more often."""
    rate = np.full(len(CHANNEL_NAMES), 0.15) + rng.uniform(-0.05, 0.05, len(CHANNEL_NAMES))
    if positive:
        rate[CHANNEL_NAMES.index("CD8")] += 0.3
        rate[CHANNEL_NAMES.index("TRITC")] += 0.04
    on = rng.random((len(CHANNEL_NAMES), SIDE, SIDE)) < rate[:, None, None]
    return np.where(on, 200, rng.integers(0, 100, on.shape)).astype(np.uint8)


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    rng = np.random.default_rng(7)
    root = tmp_path_factory.mktemp("controls")
    y = np.tile([1, 0], N_PATIENTS // 2)
    tissue = np.ones((SIDE, SIDE), bool)
    rows = [{"slide_id": f"S{i:03d}", "patient_id": f"P{i:03d}",
             **compute_slide_features(_slide(rng, bool(y[i])), tissue, 1.0, bin_um=8.0)}
            for i in range(N_PATIENTS)]
    features = write_features(rows, root / "features.parquet")
    clinical = root / "clinical.csv"
    pd.DataFrame({"patient_id": [r["patient_id"] for r in rows], "cancer_type": "LUNG",
                  "subtype": "LUAD", "EGFR": y}).to_csv(clinical, index=False)
    return features, clinical


def _rank_biserial(x: np.ndarray, y: np.ndarray) -> float:
    ok = np.isfinite(x)
    x, y = x[ok], y[ok]
    u = stats.mannwhitneyu(x[y == 1], x[y == 0]).statistic
    return 2 * u / ((y == 1).sum() * (y == 0).sum()) - 1


def _expected_beating(table: pd.DataFrame) -> tuple[int, int, dict[str, float]]:
    """Per metric: the strongest background |r| and the protein features above it (pair
    densities are compared with the background densities), summed over the metrics."""
    y = table["EGFR"].to_numpy()
    beating = compared = 0
    strongest = {}
    for m in METRICS:
        ctrl = [abs(_rank_biserial(table[f"{c}.{m}"].to_numpy(float), y))
                for c in BACKGROUND_CHANNELS]
        ctrl = [v for v in ctrl if np.isfinite(v)]
        if not ctrl:
            continue
        strongest[m] = max(ctrl)
        protein = [f"{c}.{m}" for c in PROTEIN_CHANNELS]
        if m == "density":
            protein += [col for _, _, o, a in pair_columns(PROTEIN_CHANNELS) for col in (o, a)]
        effects = [abs(_rank_biserial(table[f].to_numpy(float), y)) for f in protein]
        effects = [e for e in effects if np.isfinite(e)]
        compared += len(effects)
        beating += sum(e > strongest[m] for e in effects)
    return beating, compared, strongest


def test_features_table_carries_the_background_channels(tables):
    features, _ = tables
    cols = set(pd.read_parquet(features).columns)
    assert {f"{c}.{m}" for c in BACKGROUND_CHANNELS for m in METRICS} <= cols
    assert not [c for c in cols if re.search(r"(TRITC|Cy5)[|&]|[|&](TRITC|Cy5)", c)]


def test_associate_reports_the_controls_outside_the_families(tables):
    features, clinical = tables
    cohort = join_features(features, clinical)
    want_controls = {f"{c}.{m}" for c in BACKGROUND_CHANNELS for m in METRICS}
    assert set(cohort.controls) == want_controls
    res = associate(cohort, levels=("pan-cancer",), adjust="none")
    s = res.summary
    assert not s["feature"].astype(str).str.contains("TRITC|Cy5").any()
    assert set(res.control_tests["feature"].astype(str)) == want_controls
    # The family is the protein features alone: BH over their p-values only.
    ok = s["p"].notna().to_numpy()
    q = multipletests(s["p"][ok].to_numpy(float), method="fdr_bh")[1]
    np.testing.assert_allclose(s["q"][ok].to_numpy(float), q, rtol=1e-12)
    # CD8 (planted, strong) is a discovery; the count of protein features beating the strongest
    # background equals the count from scipy's Mann-Whitney U on the same patients.
    assert s.set_index("feature").loc["CD8.density", "q"] < 0.05
    beating, compared, strongest = _expected_beating(cohort.data)
    c = res.controls.set_index("metric")
    assert set(c.index) == set(strongest)
    for m, bound in strongest.items():
        assert c.loc[m, "control_effect"] == pytest.approx(bound, rel=1e-12)
    assert (int(c["n_beating"].sum()), int(c["n_protein"].sum())) == (beating, compared)
    assert 0 < beating < compared


def test_associate_cli_prints_the_controls_line(tables, tmp_path, capsys):
    features, clinical = tables
    out = tmp_path / "assoc.csv"
    assert main(["associate", "--features", str(features), "--clinical", str(clinical), "-o",
                 str(out), "--levels", "pan-cancer", "--adjust", "none", "-q"]) == 0
    beating, compared, _ = _expected_beating(join_features(features, clinical).data)
    printed = capsys.readouterr().out
    assert (f"protein features beat the strongest background in {beating} of {compared} tests"
            in printed)
    table = pd.read_csv(out)
    assert len(table) and not table["feature"].str.contains("TRITC|Cy5").any()


def test_a_background_feature_undefined_everywhere_is_dropped_quietly(tables):
    """A background channel that is never positive has no snr on any slide: the control is not
    tested and no warning is raised (warnings are errors here); a protein feature still warns."""
    from virtime.errors import StatisticalWarning

    features, clinical = tables
    table = pd.read_parquet(features)
    table["TRITC.snr"] = np.nan
    cohort = join_features(table, clinical)
    assert "TRITC.snr" not in cohort.controls and "Cy5.snr" in cohort.controls
    table["CD8.snr"] = np.nan
    with pytest.warns(StatisticalWarning, match=r"1 feature\(s\) undefined.*CD8\.snr"):
        join_features(table, clinical)
