"""``virtime mcp --http``: the real socket listens on 127.0.0.1 only, requests without the
token are refused, and the SDK's own HTTP client works with it."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("mcp")

_BANNER = re.compile(r"streamable HTTP at (http://127\.0\.0\.1:(\d+)/mcp) ; send the header "
                     r"'Authorization: Bearer ([^']+)'")


def _listeners(port: int) -> list[str]:
    """Local addresses (hex, as the kernel writes them) of sockets listening on ``port``."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not Path(table).is_file():
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, hexport = local.rsplit(":", 1)
            if int(hexport, 16) == port and state == "0A":  # 0A: LISTEN
                found.append(addr)
    return found


def _post(url: str, headers: dict[str, str]) -> int:
    body = b'{"jsonrpc":"2.0","id":1,"method":"ping"}'
    req = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json", "Accept": "application/json, text/event-stream",
        **headers})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        exc.close()
        return exc.code


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/net/tcp").is_file(), reason="reads the Linux socket table")
def test_http_loopback_and_token(sandbox) -> None:
    import anyio
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    proc = subprocess.Popen([sys.executable, *sandbox.server_args("--http")],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline, match = time.monotonic() + 120, None
        while match is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            assert line or proc.poll() is None, "the server exited before listening"
            match = _BANNER.search(line)
        assert match is not None
        url, port, token = match.group(1), int(match.group(2)), match.group(3)

        assert _listeners(port) == ["0100007F"]  # 127.0.0.1, nothing on other interfaces
        assert _post(url, {}) == 401
        assert _post(url, {"Authorization": "Bearer wrong"}) == 401
        assert _post(url, {"Authorization": token}) == 401  # the scheme is part of it

        async def with_token() -> set[str]:
            http = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
            async with http, Client(streamable_http_client(url, http_client=http)) as client:
                return {t.name for t in (await client.list_tools()).tools}

        assert "translate" in anyio.run(with_token)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        proc.stderr.close()
