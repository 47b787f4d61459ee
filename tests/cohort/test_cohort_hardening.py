"""Issue 15 defects 10-12 on the cohort side: the local cluster listens on loopback only, quiet
silences distributed's logs, `cohort merge` on a wrong folder and slide ids named like cohort
files are one-line errors with nothing written, `--weights DIR` says it is a directory."""

from __future__ import annotations

import pandas as pd
import psutil
import pytest

from virtime.cli import main
from virtime.cohort import open_client, run_cohort
from virtime.cohort.runner import CohortOptions
from virtime.errors import CheckpointError, InputDataError


def _listening() -> list[tuple[int, str, int]]:
    """Listening TCP sockets of this process and its children (the worker processes)."""
    me = psutil.Process()
    out = []
    for proc in [me, *me.children(recursive=True)]:
        try:
            conns = proc.net_connections(kind="inet")
        except psutil.Error:  # a child that just exited
            continue
        out += [(proc.pid, c.laddr.ip, c.laddr.port) for c in conns
                if c.status == psutil.CONN_LISTEN]
    return out


@pytest.mark.slow
def test_local_cluster_listens_on_loopback_only_and_quiet_logs_nothing(capfd):
    before = {port for _, _, port in _listening()}
    # ":0" (no host) is what the old default ":8787" looked like, on a free port
    opts = CohortOptions(workers=1, dashboard_address=":0", quiet=True)
    with open_client(opts) as client:
        assert client.submit(sum, [1, 2]).result() == 3
        cluster = client.cluster
        dash_port = cluster.scheduler.http_server.port
        sched_port = int(cluster.scheduler_address.rsplit(":", 1)[1])
        socks = [s for s in _listening() if s[2] not in before]
        ports = {port for _, _, port in socks}
        assert {dash_port, sched_port} <= ports  # the sockets really are these servers
        assert len(socks) >= 4  # scheduler, dashboard, nanny, worker
        assert {ip for _, ip, _ in socks} == {"127.0.0.1"}, socks
        assert client.dashboard_link.startswith("http://127.0.0.1:")
    err = capfd.readouterr().err
    assert "INFO" not in err, err[:500]  # neither the driver nor the worker process


def test_listen_arguments_follow_host_and_dashboard_flags():
    from virtime.cohort.runner import _listen_kwargs

    assert _listen_kwargs(CohortOptions()) == {"host": "127.0.0.1",
                                               "dashboard_address": "127.0.0.1:8787"}
    wide = CohortOptions(host="0.0.0.0", dashboard_address=":9999")  # asked for explicitly
    assert _listen_kwargs(wide) == {"host": "0.0.0.0", "dashboard_address": "0.0.0.0:9999"}
    off = _listen_kwargs(CohortOptions(dashboard=False))
    assert off["dashboard_address"] == "127.0.0.1:0" and off["scheduler_kwargs"] == {
        "dashboard": False}


def _finished_cohort(root, slide_ids):
    """A cohort folder with a ledger of done slides, each with a features.parquet."""
    from virtime.cohort.ledger import Ledger
    from virtime.features.table import write_features

    manifest = pd.DataFrame({"slide_id": slide_ids, "patient_id": [f"P{i}" for i in
                                                                   range(len(slide_ids))],
                             "path": [f"{s}.svs" for s in slide_ids], "mpp": float("nan"),
                             "size_bytes": 0})
    ledger = Ledger.open(root, manifest, "run-1")
    for sid in slide_ids:
        (root / sid).mkdir(parents=True)
        write_features([{"slide_id": sid, "CD8.density": 0.1}], root / sid / "features.parquet")
        (root / sid / "summary.json").write_text('{"status": "done"}')  # a finished translation
        ledger.record(sid, status="done")
    ledger.close()


def test_merge_refuses_a_folder_that_is_no_cohort_or_collides(tmp_path, capsys):
    plain = tmp_path / "plain"
    plain.mkdir()
    assert main(["cohort", "merge", str(plain)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(plain) in err and "not a cohort output folder" in err
    assert list(plain.iterdir()) == []

    out = tmp_path / "out"
    _finished_cohort(out, ["s1", "cohort_features.parquet"])  # a slide named like the table
    assert main(["cohort", "merge", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a directory" in err and "-o" in err
    merged = tmp_path / "merged.parquet"
    assert main(["cohort", "merge", str(out), "-o", str(merged)]) == 0
    assert sorted(pd.read_parquet(merged)["slide_id"]) == ["cohort_features.parquet", "s1"]


def test_cohort_run_refuses_slide_ids_named_like_cohort_files(tmp_path):
    manifest = pd.DataFrame({"path": ["a.svs", "b.svs"], "patient_id": ["P0", "P1"],
                             "slide_id": ["a", "Cohort_Ledger.parquet"]})
    with pytest.raises(InputDataError, match=r"b\.svs: slide id 'Cohort_Ledger\.parquet' is "
                                             r"the name of the cohort file"):
        run_cohort(manifest, None, tmp_path / "out", options=CohortOptions(show_progress=False))
    assert not (tmp_path / "out").exists()


def test_weights_directory_is_named_as_such(tmp_path, capsys):
    with pytest.raises(CheckpointError, match="is a directory, expected a checkpoint file"):
        run_cohort(pd.DataFrame({"path": ["a.svs"], "patient_id": ["P0"]}), tmp_path,
                   tmp_path / "o")
    slide = tmp_path / "s.svs"
    slide.write_bytes(b"x")
    assert main(["translate", str(slide), "-o", str(tmp_path / "t"), "--weights",
                 str(tmp_path)]) == 2
    assert "is a directory, expected a checkpoint file" in capsys.readouterr().err


def test_one_argument_order(tmp_path):
    """run_cohort(manifest, model, output, config): the model and the output are both needed."""
    manifest = pd.DataFrame({"path": ["a.svs"], "patient_id": ["P0"],
                             "slide_id": ["cohort_ledger.parquet"]})  # refused before any work
    with pytest.raises(InputDataError, match="name of the cohort file"):
        run_cohort(manifest, None, output=tmp_path / "out")
    with pytest.raises(TypeError, match="output"):
        run_cohort(manifest, tmp_path / "out")
    with pytest.raises(TypeError, match="weights"):
        run_cohort(manifest, None, tmp_path / "out", weights=None)
