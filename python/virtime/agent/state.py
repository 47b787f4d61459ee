"""What the MCP server holds between calls: guardrails, file hashes, budgets and viewers.

One :class:`AgentState` per server process; the per-session translation budget is keyed by the
MCP session object, so each client connection (stdio has one; HTTP may have several) gets its own.
"""

from __future__ import annotations

import threading
import weakref
from pathlib import Path
from typing import Any

from virtime.agent.config import AgentConfig
from virtime.agent.guardrails import PathGuard
from virtime.agent.limits import fit_result
from virtime.agent.provenance import FileHasher, provenance
from virtime.errors import VirtimeError

__all__ = ["AgentState", "BudgetExceededError"]


class BudgetExceededError(VirtimeError, PermissionError):
    """This MCP session has translated as many slides as the server allows."""


class AgentState:
    """Shared by every tool of one server."""

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.guard = PathGuard(config.allow, config.out)
        self.hasher = FileHasher()
        self._budget: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()
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

    def charge_slide(self, session: Any, slide: Path) -> int:
        """Counts ``slide`` against ``session``'s budget (once per slide); returns slides left.

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
