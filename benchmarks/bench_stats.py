"""Population-scale statistics: 15,000 patients × 231 features × 20 attributes × 3 levels.

Baselines measured in the same run: scipy's per-test ``mannwhitneyu`` (timed on a sample of the
same tests and scaled to the full count) for associations, and lifelines' log-rank/Cox per
channel for survival. Run: ``PYTHONPATH=python python -m pytest benchmarks/bench_stats.py
--benchmark-enable -s``.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from virtime.channels import PROTEIN_CHANNELS
from virtime.stats import associate, join_features, survival_analysis

N_PATIENTS = 15_000
N_TYPES, SUBTYPES_PER_TYPE = 24, 12



def _null_features_joined(rng, clin):
    """21 null channel densities and their 210 OR pairs per patient, joined to ``clin``."""
    n = len(clin)
    dens = rng.beta(2, 8, size=(n, 21))
    feats = {f"{ch}.density": dens[:, i] for i, ch in enumerate(PROTEIN_CHANNELS)}
    for i in range(21):
        for j in range(i + 1, 21):
            a, b = PROTEIN_CHANNELS[i], PROTEIN_CHANNELS[j]
            feats[f"{a}|{b}.or_density"] = np.maximum(dens[:, i], dens[:, j])
    f = pd.DataFrame(feats)
    f.insert(0, "patient_id", clin["patient_id"])
    return join_features(f, clin)

def _cohort(seed: int = 0):
    rng = np.random.default_rng(seed)
    n = N_PATIENTS
    ct = rng.integers(0, N_TYPES, n)
    st = ct * SUBTYPES_PER_TYPE + rng.integers(0, SUBTYPES_PER_TYPE, n)
    clin = pd.DataFrame({"patient_id": [f"P{i}" for i in range(n)],
                         "cancer_type": [f"T{c:02d}" for c in ct],
                         "subtype": [f"S{s:03d}" for s in st]})
    clin["stage"] = rng.integers(1, 5, n)
    for b in range(16):
        clin[f"BM{b:02d}"] = (rng.uniform(size=n) < rng.uniform(0.1, 0.5)).astype(int)
    for c in range(3):
        clin[f"CONT{c}"] = rng.gamma(2.0, 2.0, n)
    clin["os_time"] = rng.exponential(365, n)
    clin["os_event"] = (rng.uniform(size=n) < 0.6).astype(int)
    return _null_features_joined(rng, clin)


@pytest.fixture(scope="module")
def cohort():
    return _cohort()


def test_associations_full_scale(benchmark, cohort):
    res = benchmark.pedantic(associate, args=(cohort,), rounds=1, iterations=1)
    ours = benchmark.stats.stats.mean
    s = res.summary
    n_tests = len(s)
    assert n_tests > 1_000_000
    # baseline: scipy per test on a random sample of the same binary tests
    sample = s[s.kind == "binary"].sample(300, random_state=1)
    d = cohort.data
    col = {"pan-cancer": None, "cancer_type": "cancer_type", "subtype": "subtype"}
    pairs = []
    for r in sample.itertuples():  # data extraction is not timed: only the tests are
        g = d if col[r.level] is None else d[d[col[r.level]] == r.group]
        y = g[str(r.attribute)].to_numpy()
        x = g[str(r.feature)].to_numpy()
        method = "exact" if r.n <= 50 else "asymptotic"  # our rule (features have no ties)
        pairs.append((x[y == 1], x[y == 0], method, r.p))
    t0 = time.perf_counter()
    ps = [stats.mannwhitneyu(a, b, method=m).pvalue for a, b, m, _ in pairs]
    per_test = (time.perf_counter() - t0) / len(sample)
    np.testing.assert_allclose(ps, [q for *_, q in pairs], rtol=1e-6)
    baseline = per_test * n_tests
    print(f"\nassociations: {n_tests} tests in {ours:.1f} s; scipy per-test loop would take "
          f"~{baseline:.0f} s → speed-up ×{baseline / ours:.0f}; "
          f"{int((s.q < 0.05).sum())} significant under the null (FDR 5%)")


def test_survival_full_scale(benchmark, cohort):
    from lifelines import CoxPHFitter
    from lifelines.statistics import logrank_test

    res = benchmark.pedantic(survival_analysis, args=(cohort,), rounds=1, iterations=1)
    ours = benchmark.stats.stats.mean
    s = res.summary
    # baseline: lifelines on one channel of the pan-cancer group, scaled to all rows
    d = cohort.data
    x = d["CD8.density"].to_numpy()
    hi = x > np.median(x)
    t0 = time.perf_counter()
    lr = logrank_test(d.os_time[hi], d.os_time[~hi], d.os_event[hi], d.os_event[~hi])
    cph = CoxPHFitter().fit(pd.DataFrame({"t": d.os_time, "e": d.os_event, "x": x / x.std()}),
                            "t", "e")
    per_channel_pan = time.perf_counter() - t0
    row = s[(s.level == "pan-cancer") & (s.feature == "CD8.density")].iloc[0]
    assert np.isclose(lr.p_value, row.logrank_p, rtol=1e-6)
    assert np.isclose(cph.params_["x"], row.cox_coef, rtol=1e-4)
    # all groups together hold 2 × N patients (pan + types), 21 channels each
    baseline = per_channel_pan * 2 * 21
    print(f"\nsurvival: {len(s)} rows (incl. {int((s.kind == 'signature').sum())} out-of-fold "
          f"signatures, 5-fold) in {ours:.1f} s; lifelines per channel (no signature) "
          f"~{baseline:.0f} s → ×{baseline / ours:.1f}")


N_SITES = 20


def _site_cohort(seed: int = 1):
    """The same population design with a site column and 10 attributes (7 binary, 2 continuous,
    stage): the scale at which adjusting for cancer type + site must stay within 5x."""
    rng = np.random.default_rng(seed)
    n = N_PATIENTS
    ct = rng.integers(0, N_TYPES, n)
    st = ct * SUBTYPES_PER_TYPE + rng.integers(0, SUBTYPES_PER_TYPE, n)
    clin = pd.DataFrame({"patient_id": [f"P{i}" for i in range(n)],
                         "cancer_type": [f"T{c:02d}" for c in ct],
                         "subtype": [f"S{s:03d}" for s in st],
                         "site": [f"H{h:02d}" for h in rng.integers(0, N_SITES, n)]})
    clin["stage"] = rng.integers(1, 5, n)
    for b in range(7):
        clin[f"BM{b:02d}"] = (rng.uniform(size=n) < rng.uniform(0.1, 0.5)).astype(int)
    for c in range(2):
        clin[f"CONT{c}"] = rng.gamma(2.0, 2.0, n)
    return _null_features_joined(rng, clin)


def test_adjusted_associations_full_scale(benchmark):
    """Adjusted (cancer type + site: van Elteren / stratified trend) against the unadjusted run,
    both timed in this run on the same cohort."""
    cohort = _site_cohort()
    t0 = time.perf_counter()
    plain = associate(cohort, adjust="none")
    base = time.perf_counter() - t0
    res = benchmark.pedantic(associate, args=(cohort,), kwargs={"adjust": ("cancer_type", "site")},
                             rounds=1, iterations=1)
    ours = benchmark.stats.stats.mean
    s = res.summary
    assert len(s) == len(plain.summary) > 500_000
    assert s[SUMMARY_KEYS].equals(plain.summary[SUMMARY_KEYS])  # same tests, raw p unchanged
    assert set(s.loc[s.level == "pan-cancer", "covariates"]) == {"cancer_type, site"}
    print(f"\nadjusted associations: {len(s)} tests, cancer type + site in {ours:.1f} s; "
          f"unadjusted {base:.1f} s in the same run → ratio ×{ours / base:.2f}; "
          f"{int((s.q_adj < 0.05).sum())} adjusted discoveries under the null (FDR 5%)")


SUMMARY_KEYS = ["level", "group", "feature", "attribute", "n", "effect", "p", "q"]


def test_adjusted_survival_full_scale(benchmark):
    """Per-channel Cox stratified by cancer type + site against the unadjusted per-channel run
    (log-rank + Cox; the signature, which adjustment does not touch, is off in both)."""
    cohort = _site_cohort()
    rng = np.random.default_rng(2)
    cohort.data["os_time"] = rng.exponential(365, len(cohort.data))
    cohort.data["os_event"] = (rng.uniform(size=len(cohort.data)) < 0.6).astype(float)
    t0 = time.perf_counter()
    plain = survival_analysis(cohort, adjust="none", signature=False)
    base = time.perf_counter() - t0
    res = benchmark.pedantic(survival_analysis, args=(cohort,), rounds=1, iterations=1,
                             kwargs={"adjust": ("cancer_type", "site"), "signature": False})
    ours = benchmark.stats.stats.mean
    s = res.summary
    assert s["cox_p"].equals(plain.summary["cox_p"]) and (s["status_adj"] == "ok").all()
    print(f"\nadjusted survival: {len(s)} channel rows, Cox stratified by cancer type + site in "
          f"{ours:.1f} s; unadjusted {base:.1f} s in the same run → ratio ×{ours / base:.2f}")
