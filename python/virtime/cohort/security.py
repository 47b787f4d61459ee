"""Who may connect to a cohort's Dask cluster: TLS credentials for the scheduler and workers.

A Dask client that reaches a scheduler can run any function in its workers (``client.run``), as
the user who started them. The local cluster of ``virtime cohort run`` therefore speaks only
mutual TLS with credentials made for this run and kept in memory (distributed's
``Security.temporary()``: a fresh CA and certificate, needs the ``cryptography`` package); the
runner's own client holds them, and a client without them (another process, another user, even
another client in this process) is refused at the handshake. The dashboard is a separate HTTP
server and listens on loopback only unless asked otherwise.

An existing cluster (``--scheduler``) is secured by whoever started it: give the client's
credentials with ``--tls-ca-file/--tls-cert/--tls-key`` (or distributed's own configuration,
``distributed.comm.tls.*``), and a ``tls://`` address.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from virtime.errors import BackendUnavailableError, InvalidArgumentError

__all__ = ["TlsFiles", "local_cluster_security", "scheduler_security"]


@dataclass(frozen=True)
class TlsFiles:
    """The client's credentials for a TLS scheduler: the CA that signed the cluster's
    certificates, this client's certificate and its key (PEM files; the key may be inside the
    certificate file)."""

    ca_file: str | None = None
    cert: str | None = None
    key: str | None = None

    def given(self) -> bool:
        return any((self.ca_file, self.cert, self.key))


def local_cluster_security() -> Any:
    """Fresh in-memory TLS credentials for a local cluster (``distributed.Security``): its
    scheduler, nannies and workers require them of every peer, so only clients handed this
    object connect."""
    from distributed.security import Security

    try:
        return Security.temporary()
    except ImportError as exc:  # Security.temporary needs cryptography to make the certificates
        raise BackendUnavailableError(
            "the local Dask cluster's TLS credentials need the cryptography package "
            "(pip install cryptography)") from exc


def scheduler_security(address: str, tls: TlsFiles) -> Any:
    """The ``distributed.Security`` to reach the scheduler at ``address`` with ``tls``; None
    without files (distributed then reads ``distributed.comm.tls.*`` from its configuration).

    Raises InvalidArgumentError (one line) when a file is missing, the CA or certificate is
    missing, or the files are given for an address that is not ``tls://``.
    """
    if not tls.given():
        return None
    from distributed.security import Security

    if not address.startswith("tls://"):
        raise InvalidArgumentError(f"--scheduler {address}: TLS credentials were given, so the "
                                   f"address must be tls://HOST:PORT")
    if not (tls.ca_file and tls.cert):
        raise InvalidArgumentError("TLS to the scheduler needs --tls-ca-file and --tls-cert "
                                   "(and --tls-key unless the key is in the certificate file)")
    for flag, path in (("--tls-ca-file", tls.ca_file), ("--tls-cert", tls.cert),
                       ("--tls-key", tls.key)):
        if path and not os.path.isfile(path):
            raise InvalidArgumentError(f"{path}: {flag} file not found")
    return Security(tls_ca_file=tls.ca_file, tls_client_cert=tls.cert, tls_client_key=tls.key,
                    require_encryption=True)
