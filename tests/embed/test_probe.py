"""Linear probes on a planted signal: mIF features predict it, random-encoder embeddings do not."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from virtime.embed import (
    SlideEncoder,
    SlideEncoderConfig,
    delong_auc_ci,
    probe,
)
from virtime.errors import InputDataError


def delong_bruteforce(y, s):
    """O(m n) DeLong from its definition (placement values with the 1/2 tie rule)."""
    pos, neg = s[y == 1], s[y == 0]
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    v10, v01 = psi.mean(1), psi.mean(0)
    auc = psi.mean()
    var = v10.var(ddof=1) / len(pos) + v01.var(ddof=1) / len(neg)
    return auc, np.sqrt(var)


def test_delong_matches_definition_and_sklearn(rng):
    y = rng.integers(0, 2, 80)
    s = np.round(y * 0.8 + rng.standard_normal(80), 1)  # ties on purpose
    auc, se, lo, _hi = delong_auc_ci(y, s)
    ref_auc, ref_se = delong_bruteforce(y, s)
    assert auc == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert auc == pytest.approx(ref_auc, abs=1e-12)
    assert se == pytest.approx(ref_se, rel=1e-9)
    assert lo == pytest.approx(auc - 1.959963984540054 * se)


@pytest.mark.slow
def test_planted_signal_mif_predictive_random_embeddings_not(rng):
    n = 160
    ids = [f"S{i:03d}" for i in range(n)]
    y = pd.Series(rng.integers(0, 2, n), index=ids)
    # virtual-mIF slide features: CD8 density shifts with the label, the rest is noise
    mif = pd.DataFrame(rng.standard_normal((n, 6)), index=ids,
                       columns=[f"ch{i}.density" for i in range(6)])
    mif["CD8.density"] = rng.standard_normal(n) + 1.5 * y.to_numpy()
    # embeddings from a random-weight slide encoder over random tile embeddings (no signal)
    torch.manual_seed(0)
    enc = SlideEncoder(SlideEncoderConfig(in_chans=16, embed_dim=16, depth=1, num_heads=4,
                                          ffn_dim=32, segment_lengths=(64,),
                                          dilated_ratios=(1,))).eval()
    rows = []
    with torch.no_grad():
        for _ in range(n):
            tiles = torch.from_numpy(rng.standard_normal((12, 16)).astype(np.float32))
            coords = torch.from_numpy((rng.integers(0, 6, (12, 2)) * 256).astype(np.float32))
            rows.append(enc(tiles, coords)[0].numpy())
    emb = pd.DataFrame(np.stack(rows), index=ids)
    res = probe({"embedding": emb, "mif": mif}, y, n_splits=5, seed=0)
    tab = res.summary.set_index("feature_set")
    assert list(tab.index) == ["embedding", "mif", "embedding+mif"]
    assert tab.loc["mif", "auroc"] > 0.8
    assert tab.loc["embedding", "ci_low"] < 0.5 < tab.loc["embedding", "ci_high"]
    assert tab.loc["embedding+mif", "auroc"] > 0.7
    # out-of-fold AUROC recomputed independently
    assert tab.loc["mif", "auroc"] == pytest.approx(roc_auc_score(res.labels, res.oof["mif"]))


def test_probe_input_errors(rng):
    x = rng.standard_normal((20, 3))
    with pytest.raises(InputDataError, match="binary"):
        probe({"a": x}, np.arange(20) % 3)
    with pytest.raises(InputDataError, match="fewer than 5 folds"):
        probe({"a": x}, np.r_[np.ones(3), np.zeros(17)])
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(InputDataError, match="NaN"):
        probe({"a": bad}, np.arange(20) % 2)


def test_cli_probe(tmp_path, rng, capsys):
    from virtime.cli import main

    n = 60
    ids = [f"S{i}" for i in range(n)]
    y = rng.integers(0, 2, n)
    pd.DataFrame({"slide": ids, "msi": y}).to_csv(tmp_path / "labels.csv", index=False)
    pd.DataFrame({"slide": ids, "CD8.density": y * 2.0 + rng.standard_normal(n),
                  "CD3.density": rng.standard_normal(n)}).to_parquet(tmp_path / "mif.parquet")
    emb = pd.DataFrame({"slide": ids, "embedding": list(rng.standard_normal((n, 8)))})
    emb.to_parquet(tmp_path / "emb.parquet")
    rc = main(["probe", "--labels", str(tmp_path / "labels.csv"), "--label", "msi",
               "--mif", str(tmp_path / "mif.parquet"), "--embeddings", str(tmp_path / "emb.parquet"),
               "-o", str(tmp_path / "probe.csv")])
    assert rc == 0
    out = pd.read_csv(tmp_path / "probe.csv")
    assert set(out.feature_set) == {"embedding", "mif", "embedding+mif"}
    assert "auroc" in capsys.readouterr().out
