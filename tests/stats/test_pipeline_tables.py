"""Issue 15 defect 4: the tables virtime writes are valid inputs of the commands that read them.

A small cohort end to end through the CLI: translate → features --merge → validate → associate →
survival → report, every step exit 0. The slides of "MSI-high" patients are rendered with four
times the nuclei, so the virtual mIF of any model differs between the groups (a planted effect);
their survival is shorter. The association p is checked against scipy on the merged table.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from virtime.cli import main

N = 12


@pytest.fixture(scope="module")
def translated(tmp_path_factory):
    import torch
    from tiny_models import standardised_gigatime

    from virtime.models import save
    from virtime.simulate.slides import make_slide, synthetic_he

    root = tmp_path_factory.mktemp("pipeline")
    # a random small model whose logits are standardised per channel on H&E-like tiles, so
    # every channel's density varies between slides (as tests/demo's tiny model)
    rgb = np.stack([synthetic_he(64, 64, 0.5, rng=np.random.default_rng(i),
                                 nuclei_per_mm2=6000.0)[0] for i in range(8)])
    model = standardised_gigatime(rgb)
    with torch.no_grad():
        model.final.bias[-1] = -50.0  # Transgelin never positive: its SNR is undefined
    weights = root / "tiny.safetensors"
    save(model, weights, input_mpp=0.5, window=64)
    msi = np.arange(N) % 2
    slides = []
    for i in range(N):
        path = root / f"S{i:03d}.svs"
        make_slide(path, 256, 256, mpp=0.5, seed=100 + i, tissue_regions=4,
                   nuclei_per_mm2=12000.0 if msi[i] else 3000.0)
        slides.append(str(path))
    out = root / "out"
    assert main(["translate", *slides, "-o", str(out), "--weights", str(weights),
                 "--tile-size", "128", "--backend", "onnxruntime", "--threads", "1", "-q"]) == 0
    rng = np.random.default_rng(7)
    time = rng.exponential(np.where(msi == 1, 100.0, 1000.0))
    clin = pd.DataFrame({"patient_id": [f"{i:03d}" for i in range(N)],  # leading zeros
                         "slide_id": [f"S{i:03d}" for i in range(N)],
                         "cancer_type": "BOWEL", "subtype": "COAD",
                         "MSI": np.where(msi == 1, "MSI-H", "MSS"),
                         "os_time": time.round(1), "os_event": 1})
    clin.to_csv(root / "clinical.csv", index=False)
    return root, out


def _assert_warned_once(capsys, command: str, what: str) -> None:
    """The CLI showed the warning as one line, once (not a raw Python warning)."""
    lines = [ln for ln in capsys.readouterr().err.splitlines() if what in ln]
    assert len(lines) == 1 and lines[0].startswith(f"virtime {command}: warning: "), lines


@pytest.mark.slow
def test_own_tables_run_through_every_statistics_command(translated, tmp_path, capsys):
    root, out = translated
    merged = tmp_path / "features.parquet"
    assert main(["features", "--merge", str(out), "-o", str(merged)]) == 0
    table = pd.read_parquet(merged)
    assert table["immune.phenotype"].dtype == object  # what the old commands refused
    undefined = [c for c in table.columns if c.endswith(".snr") and table[c].isna().all()]
    assert undefined  # channels never (or always) positive: SNR undefined on every slide

    common = ["--features", str(merged), "--clinical", str(root / "clinical.csv")]
    assert main(["validate", *common]) == 0
    _assert_warned_once(capsys, "validate", "undefined")
    assoc_path = tmp_path / "assoc.csv"
    assert main(["associate", *common, "-o", str(assoc_path), "--levels", "pan-cancer",
                 "--min-patients", "10", "-q"]) == 0
    _assert_warned_once(capsys, "associate", "undefined")
    assoc = pd.read_csv(assoc_path)
    assert not set(undefined) & set(assoc["feature"])
    assert assoc["feature"].str.startswith("immune.phenotype=").any()
    hits = assoc[assoc["q"] < 0.05].sort_values("p")
    assert len(hits) >= 1  # the planted effect is found
    top = hits.iloc[0]
    msi = np.arange(N) % 2 == 1
    x = table.set_index("slide_id").loc[[f"S{i:03d}" for i in range(N)], top.feature]
    ok = x.notna().to_numpy()
    ref = stats.mannwhitneyu(x[msi & ok], x[~msi & ok])
    assert top.p == pytest.approx(ref.pvalue, rel=1e-6) and top.n == ok.sum()

    surv_path = tmp_path / "surv.csv"
    assert main(["survival", *common, "-o", str(surv_path), "--levels", "pan-cancer",
                 "--min-patients", "10", "--min-events", "5", "--folds", "3", "-q"]) == 0
    _assert_warned_once(capsys, "survival", "undefined")
    surv = pd.read_csv(surv_path)
    row = surv[surv["kind"] == "channel"].sort_values("logrank_p").iloc[0]
    assert row.logrank_p < 0.05  # shorter survival of the planted group, seen through the map
    from lifelines.statistics import logrank_test

    clin = pd.read_csv(root / "clinical.csv")
    x = table.set_index("slide_id").loc[clin["slide_id"], row.feature].to_numpy()
    hi = x > np.median(x)
    t = clin["os_time"].to_numpy()
    ref = logrank_test(t[hi], t[~hi], np.ones(hi.sum()), np.ones((~hi).sum()))
    assert row.logrank_p == pytest.approx(ref.p_value, rel=1e-6)

    report = tmp_path / "report.html"
    assert main(["report", *common, "-o", str(report), "--levels", "pan-cancer",
                 "--min-patients", "10", "--no-survival", "-q"]) == 0
    _assert_warned_once(capsys, "report", "undefined")
    assert "Associations" in report.read_text(encoding="utf-8")


@pytest.mark.slow
def test_malformed_tiers_file_is_one_line_and_writes_nothing(translated, tmp_path, capsys):
    root, out = translated
    report = tmp_path / "report.html"
    for content, problem in (('["CD8", "high"]', "must be an object"),
                             ('{"CD8": {"tier": 1}}', "must be a string"),
                             ('{"NOPE": "high"}', "unknown channel"),
                             ('{"CD8": ', "cannot read tiers JSON")):
        tiers = tmp_path / "tiers.json"
        tiers.write_text(content)
        assert main(["report", "--features", str(out / "S000" / "features.parquet"),
                     "--clinical", str(root / "clinical.csv"), "--tiers", str(tiers),
                     "-o", str(report), "-q"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and str(tiers) in err and problem in err, err
        assert not report.exists()
