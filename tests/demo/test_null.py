"""A cohort without planted effects: the false discovery proportion stays within the FDR level.

Ground-truth features of one rendered null cohort; over many seeds the clinical attributes are
shuffled jointly within each subtype (under the null they are independent of the tissue given
the subtype), and the per-family false discovery proportion is averaged over families and seeds.
Benjamini-Hochberg bounds its expectation by alpha; the bound below allows three standard errors.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

ALPHA = 0.05
SEEDS = 20


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:demo.*left out:UserWarning")
def test_null_cohort_fdp_within_fdr_level(tmp_path):
    from virtime.demo.run import prepare_features
    from virtime.simulate.cohort import analysed_features, default_design, truth_table
    from virtime.simulate.cohort_render import simulate_cohort
    from virtime.stats import associate, join_features

    design = default_design().null()
    c = simulate_cohort(tmp_path / "null", 90, design=design, slide_px=256, write_slides=False,
                        show_progress=False, seed=11)
    feats, names = prepare_features(c.truth_features(), analysed_features(), "null")
    truth = truth_table(design)
    allowed = set(map(tuple, truth[["level", "group", "feature", "attribute",
                                    "direction"]].astype(str).to_numpy()))
    attrs = ["KRAS", "KMT2D", "MSI-high", "TMB-high", "stage"]
    rng = np.random.default_rng(2024)
    fdps = []
    for _ in range(SEEDS):
        clinical = c.clinical.copy()
        for idx in clinical.groupby("subtype").groups.values():
            perm = rng.permutation(len(idx))
            clinical.loc[idx, attrs] = clinical.loc[idx, attrs].to_numpy()[perm]
        cohort = join_features(feats, clinical)
        s = associate(cohort, features=tuple(names), alpha=ALPHA).summary
        s = s[s["p"].notna()]
        for _, fam in s.groupby(["level", "group"], observed=True):
            sig = fam[fam["q"] < ALPHA]
            if not len(sig):
                fdps.append(0.0)
                continue
            keys = sig[["level", "group", "feature", "attribute", "direction"]].astype(str)
            false = sum(tuple(k) not in allowed for k in keys.to_numpy())
            fdps.append(false / len(sig))
    mean = float(np.mean(fdps))
    se = math.sqrt(ALPHA * (1 - ALPHA) / len(fdps))
    assert len(fdps) >= SEEDS * 4
    assert mean <= ALPHA + 3 * se, (mean, len(fdps))
