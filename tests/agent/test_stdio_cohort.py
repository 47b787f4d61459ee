"""The statistics tools over stdio equal the CLI on the same files (a small simulated cohort)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("mcp")

CHANNELS = ("CD8", "CD68", "PD-L1", "Ki67")


def _cohort(rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two cancer types x two subtypes x 40 patients; CD8.density higher in KRAS-mutated
    patients (a planted effect) and shorter survival with higher Ki67."""
    rows = [(ct, st) for ct, subs in (("LUNG", ("LUAD", "LUSC")), ("BOWEL", ("COAD", "READ")))
            for st in subs for _ in range(40)]
    clin = pd.DataFrame(rows, columns=["cancer_type", "subtype"])
    n = len(clin)
    clin.insert(0, "patient_id", [f"P{i:04d}" for i in range(n)])
    clin["KRAS"] = rng.choice(["mutated", "wild-type"], size=n, p=[0.4, 0.6])
    clin["stage"] = rng.choice(["I", "II", "III", "IV"], size=n)
    feats = pd.DataFrame({f"{c}.density": rng.lognormal(0, 0.5, size=n) for c in CHANNELS})
    feats["CD8.density"] += 1.5 * (clin["KRAS"] == "mutated").to_numpy()
    t = rng.exponential(365 * np.exp(-0.8 * np.log(feats["Ki67.density"].to_numpy())))
    c = rng.exponential(700, size=n)
    clin["os_time"], clin["os_event"] = np.minimum(t, c).round(1), (t <= c).astype(int)
    feats.insert(0, "patient_id", clin["patient_id"])
    feats.insert(0, "slide_id", [f"{p}-S0" for p in clin["patient_id"]])
    return feats, clin


@pytest.mark.slow
def test_associate_and_survival_equal_the_cli(sandbox, mcp_run, rng) -> None:
    from virtime.cli import main

    feats, clin = _cohort(rng)
    feats.to_csv(sandbox.allow / "features.csv", index=False)
    clin.to_csv(sandbox.allow / "clinical.csv", index=False)
    files = ["--features", str(sandbox.allow / "features.csv"),
             "--clinical", str(sandbox.allow / "clinical.csv")]
    cli_assoc, cli_surv = sandbox.root / "cli_assoc.parquet", sandbox.root / "cli_surv.parquet"
    assert main(["associate", *files, "-o", str(cli_assoc), "--min-patients", "10",
                 "--quiet"]) == 0
    assert main(["survival", *files, "-o", str(cli_surv), "--min-patients", "10",
                 "--min-events", "5", "--no-signature", "--quiet"]) == 0

    async def scenario(client):
        common = {"features": "features.csv", "clinical": "clinical.csv", "min_patients": 10}
        a = await client.call_tool("associate", {**common, "output": "stats/assoc.parquet"})
        s = await client.call_tool("survival", {**common, "output": "stats/surv.parquet",
                                                "min_events": 5, "signature": False})
        r = await client.call_tool("report", {**common, "output": "report.html",
                                              "survival": False})
        page = await client.read_resource("virtime://reports/report.html")
        return a, s, r, page

    assoc, surv, report, page = mcp_run(sandbox.server_args("--max-rows", "5"), scenario)
    assert not assoc.is_error and not surv.is_error
    a, s = assoc.structured_content, surv.structured_content
    assert a["table"] == str((sandbox.out / "stats" / "assoc.parquet").resolve())

    expected = pd.read_parquet(cli_assoc)
    pd.testing.assert_frame_equal(pd.read_parquet(a["table"]), expected)
    assert a["tests"] == len(expected)
    assert a["significant"] == int((expected["q"] < 0.05).sum())
    top = expected.sort_values(["q", "p"], kind="mergesort").head(5)
    assert [(r["feature"], r["attribute"], r["level"], r["group"]) for r in a["top"]] == list(
        zip(top["feature"], top["attribute"], top["level"], top["group"]))
    assert [r["q"] for r in a["top"]] == pytest.approx(top["q"].tolist())
    # the planted effect leads the pan-cancer KRAS tests
    kras = [r for r in a["top"] if r["attribute"] == "KRAS" and r["level"] == "pan-cancer"]
    assert kras and kras[0]["feature"] == "CD8.density"

    expected = pd.read_parquet(cli_surv)
    pd.testing.assert_frame_equal(pd.read_parquet(s["table"]), expected)
    first = expected.sort_values("logrank_p", kind="mergesort").iloc[0]
    assert (s["top"][0]["feature"], s["top"][0]["group"]) == (first["feature"], first["group"])
    assert len(s["top"]) == 5  # --max-rows
    for result in (a, s):
        assert set(result["provenance"]["input_sha256"]) == {
            str((sandbox.allow / n).resolve()) for n in ("features.csv", "clinical.csv")}

    assert not report.is_error, report.content
    written = sandbox.out / "report.html"
    assert report.structured_content["report"] == str(written.resolve())
    assert page.contents[0].text == written.read_text(encoding="utf-8")
    assert "CD8.density" in page.contents[0].text
