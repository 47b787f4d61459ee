"""The cohort's local Dask cluster admits only the runner's own client: a client without this
run's TLS credentials (none, another CA, plain TCP) is refused by the scheduler and the workers,
while the runner's client still runs tasks; TLS files for an existing scheduler are checked."""

from __future__ import annotations

import asyncio
import os

import pytest
from distributed import Client
from distributed.comm import connect
from distributed.security import Security

from virtime.cli import main
from virtime.cohort.runner import CohortOptions, run_cohort
from virtime.cohort.security import TlsFiles, scheduler_security
from virtime.errors import InvalidArgumentError


def _refused_client(address: str, **kwargs) -> BaseException | None:
    """Why a foreign client could not attach (None: it attached, and ran a function in every
    worker, as the probe did)."""
    try:
        foreign = Client(address, timeout=5, **kwargs)
    except Exception as exc:  # noqa: BLE001 - the kind of refusal varies with the attempt
        return exc
    try:
        foreign.run(os.getpid)
    finally:
        foreign.close()
    return None


def _refused_comm(address: str, **kwargs) -> BaseException | None:
    async def attempt():
        comm = await connect(address, timeout=5, **kwargs)
        await comm.close()

    try:
        asyncio.run(attempt())
    except Exception as exc:  # noqa: BLE001
        return exc
    return None


def test_a_foreign_client_cannot_attach_to_the_local_cluster():
    from cohort_helpers import local_client

    with local_client(1) as client:  # the runner's own code path (open_client)
        address = client.scheduler.address
        assert address.startswith("tls://127.0.0.1:")
        pids = client.run(os.getpid)  # the runner's client runs code in its workers
        assert list(pids) == list(client.scheduler_info()["workers"]) and os.getpid() not in \
            pids.values()
        # another process's view of it: no credentials, its own CA, or plain TCP on the port
        assert isinstance(_refused_client(address), TypeError)  # TLS needs a context
        assert _refused_client(address, security=Security.temporary()) is not None
        assert _refused_client(address.replace("tls://", "tcp://")) is not None
        # nor straight to a worker or its nanny, bypassing the scheduler
        info = client.scheduler_info()["workers"]
        peers = [*info, *(w["nanny"] for w in info.values() if w.get("nanny"))]
        assert len(peers) == 2 and all(p.startswith("tls://") for p in peers)
        for peer in peers:
            assert _refused_comm(peer) is not None
            assert _refused_comm(peer.replace("tls://", "tcp://")) is not None
        assert client.submit(sum, [1, 2]).result() == 3  # the runner's client still works


def test_tls_files_for_an_existing_scheduler_are_checked(tmp_path, capsys):
    ca, cert = tmp_path / "ca.pem", tmp_path / "client.pem"
    ca.write_text("CA")
    cert.write_text("CERT")
    assert scheduler_security("tls://head:8786", TlsFiles()) is None  # dask config decides
    sec = scheduler_security("tls://head:8786", TlsFiles(str(ca), str(cert)))
    assert (sec.tls_ca_file, sec.tls_client_cert, sec.require_encryption) == (str(ca), str(cert),
                                                                              True)
    with pytest.raises(InvalidArgumentError, match="must be tls://"):
        scheduler_security("tcp://head:8786", TlsFiles(str(ca), str(cert)))
    with pytest.raises(InvalidArgumentError, match="needs --tls-ca-file and --tls-cert"):
        scheduler_security("tls://head:8786", TlsFiles(cert=str(cert)))
    with pytest.raises(InvalidArgumentError, match="key.pem: --tls-key file not found"):
        scheduler_security("tls://head:8786", TlsFiles(str(ca), str(cert), str(tmp_path /
                                                                               "key.pem")))
    with pytest.raises(InvalidArgumentError, match="for an existing --scheduler"):
        run_cohort("m.csv", None, tmp_path / "out", options=CohortOptions(
            tls=TlsFiles(str(ca), str(cert))))
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,slide_id,patient_id\nmissing.svs,s,P\n")
    assert main(["cohort", "run", str(manifest), "-o", str(tmp_path / "out"), "--scheduler",
                 "tcp://127.0.0.1:1", "--tls-ca-file", str(ca), "--tls-cert", str(cert)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "must be tls://" in err[0]
    # a tls:// scheduler without credentials: one line saying which flags it needs
    assert main(["cohort", "run", str(manifest), "-o", str(tmp_path / "out"), "--scheduler",
                 "tls://127.0.0.1:1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot connect" in err[0] and "--tls-cert" in err[0], err
