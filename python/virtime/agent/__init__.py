"""virtime for AI agents: an MCP server (``virtime mcp``) over the local pipeline, with guardrails.

Built on the official Model Context Protocol SDK (the optional ``mcp`` dependency:
``pip install virtime[mcp]``). The parts, one module each:

* :mod:`~virtime.agent.config` — :class:`AgentConfig`, what the server may do;
* :mod:`~virtime.agent.guardrails` — paths read only under ``--allow``, written only under
  ``--output``;
* :mod:`~virtime.agent.provenance`, :mod:`~virtime.agent.limits` — provenance and size limits of
  every result; :mod:`~virtime.agent.state` — what the server holds between calls (budgets);
* :mod:`~virtime.agent.tools_slides`, :mod:`~virtime.agent.tools_cohort` — the tools, their result
  shapes in :mod:`~virtime.agent.results`;
  :mod:`~virtime.agent.translate_job` runs ``translate`` in a worker process (cancellable);
* :mod:`~virtime.agent.resources`, :mod:`~virtime.agent.prompts` — resources and the prompt;
* :mod:`~virtime.agent.server` (stdio), :mod:`~virtime.agent.http_transport` (HTTP + token).

Only ``config`` and ``guardrails`` import without the SDK.
"""

from __future__ import annotations

from virtime.agent.config import AgentConfig
from virtime.agent.guardrails import PathGuard, PathRefusedError

__all__ = ["AgentConfig", "PathGuard", "PathRefusedError"]
