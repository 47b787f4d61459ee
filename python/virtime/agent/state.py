"""What the MCP server holds between calls: guardrails, file hashes, budgets and viewers.

One :class:`AgentState` per server process. The translation budget is per MCP session: over
stdio a server process serves one client, so the process is the session; over HTTP a client that
keeps an ``Mcp-Session-Id`` gets its own budget, and stateless requests (no session id: the
2026 protocol's single exchanges) share the server's one budget, the stricter reading.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from virtime.agent.config import AgentConfig
from virtime.agent.guardrails import PathGuard
from virtime.agent.limits import fit_result
from virtime.agent.provenance import FileHasher, provenance
from virtime.errors import VirtimeError

__all__ = ["AgentState", "BudgetExceededError", "session_key"]


class BudgetExceededError(VirtimeError, PermissionError):
    """This MCP session has translated as many slides as the server allows."""


def session_key(headers: Mapping[str, str] | None) -> str:
    """The budget key of a request: its HTTP ``Mcp-Session-Id``, else the whole server."""
    for name, value in (headers or {}).items():
        if name.lower() == "mcp-session-id" and value:
            return f"http-session:{value}"
    return "server"


class AgentState:
    """Shared by every tool of one server."""

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.guard = PathGuard(config.allow, config.out)
        self.hasher = FileHasher()
        self._budget: dict[str, set[str]] = {}
        self._lock = threading.Lock()
        self._model_hash: str | None = None
        self.viewers: dict[Path, Any] = {}

    @property
    def model_hash(self) -> str:
        """sha256 of the translator weights ``translate`` uses (the demo model's by default)."""
        if self._model_hash is None:
            from virtime.models import DEMO_WEIGHTS

            self._model_hash = self.hasher.file(self.config.weights or DEMO_WEIGHTS)
        return self._model_hash

    def charge_slide(self, session: str, slide: Path) -> int:
        """Counts ``slide`` against the budget of ``session`` (a :func:`session_key`), once per
        slide (a resumed or repeated slide is not counted again); returns the slides left.

        Raises :class:`BudgetExceededError` when a new slide would pass ``max_slides``.
        """
        with self._lock:
            used = self._budget.setdefault(session, set())
            key = str(slide)
            if key not in used and len(used) >= self.config.max_slides:
                raise BudgetExceededError(
                    f"{slide}: refused, this session has already translated "
                    f"{self.config.max_slides} slide(s), the server's --max-slides")
            used.add(key)
            return self.config.max_slides - len(used)

    def result(self, body: dict[str, Any], *, settings: dict[str, Any], inputs: list[Path],
               model_hash: str | None = None) -> dict[str, Any]:
        """``body`` with its provenance block, cut to the result size limit."""
        stamped = {**body, "provenance": provenance(
            model_hash=model_hash or self.model_hash, settings=settings,
            inputs=self.hasher.inputs(inputs))}
        return fit_result(stamped, self.config.max_result_bytes)

    def close(self) -> None:
        """Stops the viewers this server started."""
        for viewer in self.viewers.values():
            viewer.close()
        self.viewers.clear()
