"""Cohort runs on a real 2-process Dask LocalCluster, checked against `virtime.translate` slide by
slide; bad slides recorded without retries; a rerun does no work; a worker killed mid-slide."""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time

import numpy as np
import pandas as pd
import pytest
from slide_outputs import assert_same_outputs

import virtime
from virtime.cli import main
from virtime.cohort import read_ledger, run_cohort
from virtime.cohort.runner import CohortOptions

QUIET = CohortOptions(show_progress=False)
GOOD = {"s_wide": (1024, 512), "s_mid": (768, 512), "s_small": (512, 384)}


@pytest.fixture(scope="module")
def cohort_slides(tmp_path_factory):
    """Three good slides, two slides without mpp (one rescued by the manifest), two bad files."""
    from cohort_helpers import make_cohort_slides

    from virtime.simulate.slides import make_slide

    d = tmp_path_factory.mktemp("cohort-slides")
    rows = make_cohort_slides(d, GOOD, 30, patient_id=lambda i: f"P{i // 2}", mpp="")
    make_slide(d / "nompp_ok.tif", 512, 384, mpp=0.5, fmt="generic-no-mpp", seed=40)
    make_slide(d / "nompp_bad.tif", 512, 384, mpp=0.5, fmt="generic-no-mpp", seed=41)
    rows.append({"path": "nompp_ok.tif", "slide_id": "nompp_ok", "patient_id": "P2", "mpp": "0.5"})
    rows.append({"path": "nompp_bad.tif", "slide_id": "nompp_bad", "patient_id": "P3", "mpp": ""})
    (d / "junk.svs").write_text("not a slide at all")
    rows.append({"path": "junk.svs", "slide_id": "junk", "patient_id": "P4", "mpp": ""})
    rows.append({"path": "missing.svs", "slide_id": "missing", "patient_id": "P5", "mpp": ""})
    pd.DataFrame(rows).to_csv(d / "manifest.csv", index=False)
    return d


def _same_outputs(a, b):
    """Two slide folders hold the same virtual mIF, tile table and features."""
    assert_same_outputs(a, b, tables=("tiles.parquet", "features.parquet"))
    np.testing.assert_array_equal(np.load(a / "tissue_mask.npy"), np.load(b / "tissue_mask.npy"))
    assert (b / "thumbnail.png").is_file() and (b / "summary.json").is_file()


@pytest.fixture(scope="module")
def first_run(cohort_slides, tiny_weights, cohort_config, dask_client, tmp_path_factory):
    out = tmp_path_factory.mktemp("cohort-out")
    result = run_cohort(cohort_slides / "manifest.csv", tiny_weights, out, cohort_config,
                        options=QUIET, client=dask_client)
    return out, result


@pytest.mark.slow
def test_cohort_matches_translate_one_by_one(first_run, cohort_slides, tiny_model,
                                            cohort_config, tmp_path):
    out, result = first_run
    ledger = result.ledger.set_index("slide_id")
    done = sorted(GOOD) + ["nompp_ok"]
    assert sorted(ledger.index[ledger["status"] == "done"]) == sorted(done)
    for sid in done:
        mpp = 0.5 if sid == "nompp_ok" else None
        path = next(cohort_slides.glob(f"{sid}.*"))
        ref = virtime.translate(path, tiny_model, tmp_path,
                                dataclasses.replace(cohort_config, mpp=mpp), slide_id=sid)
        _same_outputs(ref.output_dir, out / sid)
        assert ledger.loc[sid, "tiles_done"] == ref.tiles_done
        assert ledger.loc[sid, "attempts"] == 1 and ledger.loc[sid, "seconds"] > 0
    # The on-disk ledger is the returned one.
    pd.testing.assert_frame_equal(read_ledger(out), result.ledger)


@pytest.mark.slow
def test_bad_slides_fail_once_with_their_reason(first_run):
    _, result = first_run
    ledger = result.ledger.set_index("slide_id")
    expected = {"junk": "SlideFormatError", "missing": "SlideNotFoundError",
                "nompp_bad": "MissingMppError"}
    for sid, error in expected.items():
        assert ledger.loc[sid, "status"] == "failed"
        assert ledger.loc[sid, "reason"].startswith(error) and "\n" not in ledger.loc[sid, "reason"]
        assert ledger.loc[sid, "attempts"] == 1  # deterministic: no retries
    assert result.counts["failed"] == 3 and result.counts["done"] == 4
    by_status = result.summary.set_index("status")["slides"]
    assert by_status["failed"] == 3 and by_status["done"] == 4
    assert int(by_status.sum()) == result.counts["slides"]


@pytest.mark.slow
def test_engines_are_built_once_per_worker_and_largest_slide_runs_first(first_run, cohort_slides):
    _, result = first_run
    ran = result.ledger[result.ledger["status"] != "pending"]
    workers = set(ran["worker"])
    assert len(workers) <= 2
    assert (~ran["engine_cached"]).sum() == len(workers)  # one build per worker, then reused
    sizes = {sid: os.path.getsize(next(cohort_slides.glob(f"{sid}.*"))) for sid in GOOD}
    largest = max(sizes, key=sizes.get)
    started = result.ledger.set_index("slide_id")["started"]
    assert started[largest] <= started.median()


@pytest.mark.slow
def test_cohort_features_join_patients(first_run, cohort_slides):
    out, result = first_run
    table = pd.read_parquet(result.features_path)
    manifest = pd.read_csv(cohort_slides / "manifest.csv", dtype=str)
    assert list(table.columns[:2]) == ["slide_id", "patient_id"]
    assert sorted(table["slide_id"]) == sorted([*GOOD, "nompp_ok"])
    want = dict(zip(manifest["slide_id"], manifest["patient_id"]))
    assert all(want[s] == p for s, p in zip(table["slide_id"], table["patient_id"]))
    for sid in table["slide_id"]:
        per_slide = pd.read_parquet(out / sid / "features.parquet").drop(columns="slide_id")
        row = table[table["slide_id"] == sid].drop(columns=["slide_id", "patient_id"])
        pd.testing.assert_frame_equal(row.reset_index(drop=True), per_slide)


@pytest.mark.slow
def test_rerun_of_a_completed_cohort_does_no_work(first_run, cohort_slides, tiny_weights, capsys):
    out, _ = first_run
    manifest = pd.read_csv(cohort_slides / "manifest.csv", dtype=str, keep_default_na=False)
    good = manifest[manifest["slide_id"].isin([*GOOD, "nompp_ok"])]
    good.to_csv(cohort_slides / "good.csv", index=False)
    stamps = {p: p.stat().st_mtime_ns for sid in good["slide_id"] for p in (out / sid).rglob("*")}
    # Through the CLI, without any cluster: nothing to do means no cluster is started at all.
    rc = main(["cohort", "run", str(cohort_slides / "good.csv"), "-o", str(out),
               "--weights", str(tiny_weights), "--tile-size", "128", "--backend", "onnxruntime",
               "-q", "--scheduler", "tcp://127.0.0.1:1"])  # unreachable: must not be contacted
    assert rc == 0
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    ledger = read_ledger(out)
    assert set(ledger["status"]) == {"skipped"} and len(ledger) == 4
    assert (ledger["translate_seconds"] > 0).all()  # earlier timings kept
    capsys.readouterr()
    assert main(["cohort", "status", str(out)]) == 0
    assert "skipped: 4" in capsys.readouterr().out
    merged = out / "again.parquet"
    assert main(["cohort", "merge", str(out), "-o", str(merged)]) == 0
    assert len(pd.read_parquet(merged)) == 4


def test_status_of_a_folder_without_cohort_is_one_error(tmp_path, capsys):
    assert main(["cohort", "status", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no cohort ledger" in err


@pytest.mark.slow
def test_prefetch_warms_queued_slides(first_run, dask_client):
    from virtime.cohort.worker import prefetched_slides

    seen = [sid for ids in dask_client.run(prefetched_slides).values() for sid in ids]
    assert seen and set(seen) <= {*GOOD, "nompp_ok", "nompp_bad", "junk", "missing"}


@pytest.mark.slow
def test_worker_killed_mid_slide_is_retried_and_resumes(cohort_slides, tiny_weights, tiny_model,
                                                        cohort_config, dask_client, tmp_path):
    from virtime.simulate.slides import make_slide

    big = make_slide(tmp_path / "big.svs", 1536, 1024, mpp=0.5, seed=50)
    manifest = pd.DataFrame({"path": [str(big), str(cohort_slides / "s_mid.svs"),
                                      str(cohort_slides / "s_small.svs")],
                             "slide_id": ["big", "s_mid", "s_small"],
                             "patient_id": ["K1", "K2", "K3"]})
    out = tmp_path / "out"
    box: dict[str, object] = {}

    def drive():
        try:
            box["result"] = run_cohort(manifest, tiny_weights, out, cohort_config,
                                       options=QUIET, client=dask_client)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
            box["error"] = exc

    thread = threading.Thread(target=drive)
    thread.start()
    # Wait until the big slide is mid-way: a canvas band and partial tile table written.
    deadline = time.monotonic() + 150
    journal = out / "big" / ".tiles.partial.jsonl"
    while not (journal.exists() and journal.stat().st_size > 0):
        assert time.monotonic() < deadline and thread.is_alive(), box
        time.sleep(0.05)
    assert not (out / "big" / "summary.json").exists()
    pids = dask_client.run(os.getpid)
    running = [w for w, keys in dask_client.processing().items()
               if any(isinstance(k, tuple) and k[2] == "big" for k in keys)]
    assert len(running) == 1
    os.kill(pids[running[0]], signal.SIGKILL)
    thread.join(timeout=240)
    assert not thread.is_alive() and "error" not in box, box
    ledger = box["result"].ledger.set_index("slide_id")
    assert set(ledger["status"]) == {"done"}
    assert ledger.loc["big", "attempts"] >= 2  # killed, then retried
    ref = virtime.translate(big, tiny_model, tmp_path / "ref", cohort_config)
    _same_outputs(ref.output_dir, out / "big")  # resumed output equals an uninterrupted run


def test_open_client_starts_a_local_cpu_cluster_with_the_retry_limit():
    from virtime.cohort import open_client

    opts = CohortOptions(workers=1, max_attempts=4, dashboard_address=":0")
    with open_client(opts) as client:
        assert len(client.scheduler_info()["workers"]) == 1
        limit = client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.allowed_failures)
        assert limit == 3  # max_attempts - 1 worker deaths tolerated per slide
        assert client.dashboard_link


@pytest.mark.slow
def test_cohort_features_are_valid_statistics_input(first_run, tmp_path, capsys):
    """cohort_features.parquet (immune.phenotype, undefined .snr) goes through validate and
    associate as it is (issue 15, defect 4)."""
    _, result = first_run
    table = pd.read_parquet(result.features_path)
    patients = sorted(set(table["patient_id"]))
    clin = pd.DataFrame({"patient_id": patients, "cancer_type": "LUNG", "subtype": "LUAD",
                         "KRAS": [i % 2 for i in range(len(patients))]})
    clin.to_csv(tmp_path / "clinical.csv", index=False)
    common = ["--features", str(result.features_path), "--clinical", str(tmp_path / "clinical.csv")]
    assert main(["validate", *common]) == 0
    out, err = capsys.readouterr()
    assert f"ok: {len(patients)} patients" in out
    assert "virtime validate: warning: " in err and "undefined" in err  # one line, not raw
    assert main(["associate", *common, "-o", str(tmp_path / "a.csv"), "--min-patients", "3",
                 "--min-per-class", "1", "--levels", "pan-cancer", "-q"]) == 0
    assert "virtime associate: warning: " in capsys.readouterr().err
    assoc = pd.read_csv(tmp_path / "a.csv")
    assert len(assoc) and assoc["feature"].str.startswith("immune.phenotype=").any()
