"""Fixtures of the MCP server tests: a sandbox with an allowed folder, an output folder and a
tiny model, and a client that starts ``virtime mcp`` over stdio with the SDK's own client."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


@dataclass(frozen=True)
class Sandbox:
    root: Path  # holds everything below, and files that must stay unreadable
    allow: Path
    out: Path
    slide: Path  # a synthetic slide under allow
    weights: Path  # a tiny translator under root (the server is given its path)

    def server_args(self, *extra: str) -> list[str]:
        return ["-m", "virtime.cli", "mcp", "--allow", str(self.allow), "--output", str(self.out),
                "--weights", str(self.weights), "--backend", "onnxruntime", "--threads", "1",
                *extra]


@pytest.fixture
def sandbox(tmp_path: Path, tiny_weights: Path) -> Sandbox:
    from virtime.simulate.slides import make_slide

    allow = tmp_path / "allowed"
    allow.mkdir()
    slide = make_slide(allow / "small.svs", 768, 512, mpp=0.5, seed=11)
    return Sandbox(tmp_path, allow, tmp_path / "out", Path(slide), Path(tiny_weights))


def run_client(args: list[str], scenario: Callable[[Any], Awaitable[Any]],
               env: dict[str, str] | None = None) -> Any:
    """Starts ``python ARGS`` as an MCP server over stdio (with ``env``, else the SDK's default
    environment), runs ``scenario(client)`` against it with the SDK's :class:`mcp.Client`, and
    returns what the scenario returns."""
    import anyio
    from mcp import Client, StdioServerParameters

    async def main() -> Any:
        params = StdioServerParameters(command=sys.executable, args=args, env=env)
        async with Client(params) as client:
            return await scenario(client)

    return anyio.run(main)


@pytest.fixture
def mcp_run() -> Callable[..., Any]:
    """:func:`run_client`."""
    return run_client
