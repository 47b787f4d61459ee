"""The MCP server: the tools, resources and prompt on one ``MCPServer``, run over stdio.

:func:`build_server` wires the parts (each in its own module) to one :class:`AgentState`;
:func:`serve_stdio` runs it for a desktop agent. The HTTP transport is in
:mod:`virtime.agent.http_transport`.
"""

from __future__ import annotations

from typing import Any

from virtime import __version__
from virtime.agent.config import AgentConfig
from virtime.agent.state import AgentState

__all__ = ["INSTRUCTIONS", "build_server", "serve_stdio"]

INSTRUCTIONS = (
    "virtime translates H&E whole-slide images into virtual multiplex immunofluorescence (23 "
    "channels) and analyses cohorts. Virtual mIF is a model prediction, not a measured stain. "
    "Paths: read only under the server's allowed folders, write only under its output folder. "
    "Every result carries provenance (virtime version, model hash, settings, input sha256). "
    "Ask the person to review results before stating any conclusion."
)


def build_server(config: AgentConfig) -> tuple[Any, AgentState]:
    """An ``MCPServer`` with every virtime tool, resource and prompt, and its state."""
    from mcp.server.mcpserver import MCPServer

    from virtime.agent.prompts import register_prompts
    from virtime.agent.resources import register_resources
    from virtime.agent.tools_cohort import register_cohort_tools
    from virtime.agent.tools_slides import register_slide_tools

    state = AgentState(config)
    app = MCPServer("virtime", version=__version__, instructions=INSTRUCTIONS,
                    log_level="WARNING")
    register_slide_tools(app, state)
    register_cohort_tools(app, state)
    register_resources(app, state)
    register_prompts(app)
    return app, state


def serve_stdio(config: AgentConfig) -> None:
    """Serves on stdin/stdout until the client closes them."""
    app, state = build_server(config)
    try:
        app.run("stdio")
    finally:
        state.close()
