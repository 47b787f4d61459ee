"""The statistics CLI commands: outputs written, bad input → one stderr line and exit 2."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from virtime.cli import main


@pytest.fixture
def files(tmp_path, rng, cohort_factory):
    feats, clin = cohort_factory(rng, per_subtype=30, plant=("CD8.density", "KRAS", "LUAD", 2.0))
    feats.to_parquet(tmp_path / "features.parquet")
    clin.to_csv(tmp_path / "clinical.csv", index=False)
    return tmp_path, ["--features", str(tmp_path / "features.parquet"),
                      "--clinical", str(tmp_path / "clinical.csv")]


def test_validate_ok_and_error(files, capsys):
    tmp, args = files
    assert main(["validate", *args]) == 0
    assert "ok: 240 patients, 4 cancer types, 8 subtypes, 21 features" in capsys.readouterr().out
    bad = pd.read_csv(tmp / "clinical.csv")
    bad.loc[0, "os_event"] = 2
    bad.to_csv(tmp / "bad.csv", index=False)
    assert main(["validate", "--features", str(tmp / "features.parquet"),
                 "--clinical", str(tmp / "bad.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "bad.csv" in err and "0/1" in err


def test_associate_and_survival(files, capsys):
    tmp, args = files
    assert main(["associate", *args, "-o", str(tmp / "assoc.parquet"), "--plot",
                 str(tmp / "grid.png"), "--plot-level", "subtype", "-q"]) == 0
    table = pd.read_parquet(tmp / "assoc.parquet")
    assert {"level", "group", "feature", "attribute", "n", "effect", "direction", "p",
            "q"} <= set(table.columns)
    hit = table[(table.group == "LUAD") & (table.feature == "CD8.density")
                & (table.attribute == "KRAS")]
    assert hit.q.iloc[0] < 0.05 and (tmp / "grid.png").stat().st_size > 1000
    assert main(["survival", *args, "-o", str(tmp / "surv.csv"), "--scores",
                 str(tmp / "scores.csv"), "--levels", "pan-cancer", "--folds", "3", "-q"]) == 0
    surv = pd.read_csv(tmp / "surv.csv")
    assert len(surv) == 22 and "signature" in set(surv.feature)
    assert len(pd.read_csv(tmp / "scores.csv")) == 240


def test_report_command(files, capsys):
    tmp, args = files
    (tmp / "tiers.json").write_text(json.dumps({"CD8": "high"}))
    assert main(["report", *args, "-o", str(tmp / "r.html"), "--levels", "pan-cancer",
                 "--no-survival", "--tiers", str(tmp / "tiers.json"), "-q"]) == 0
    assert "<h2>Associations</h2>" in (tmp / "r.html").read_text()
