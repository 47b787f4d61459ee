"""How a tool's failure reaches the agent: one clear line, and the server stays up.

The SDK reports an unexpected exception as "Error executing tool X", which tells an agent
nothing. :func:`tool_errors` turns virtime's own errors (bad path, refused path, bad slide, bad
table) and OS errors into an MCP ``ToolError`` carrying the message, the CLI's one line.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from mcp.server.mcpserver.exceptions import ToolError

from virtime.errors import VirtimeError

__all__ = ["tool_errors"]

F = TypeVar("F", bound=Callable[..., Any])


def _message(exc: BaseException) -> str:
    if isinstance(exc, OSError) and not isinstance(exc, VirtimeError) and exc.filename:
        return f"{exc.filename}: {exc.strerror or exc}"
    return str(exc) or type(exc).__name__


def tool_errors(fn: F) -> F:
    """Wraps a sync or async tool so virtime and OS errors become a ``ToolError`` message."""
    if inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def run_async(*args: Any, **kwargs: Any) -> Any:
            try:
                return await fn(*args, **kwargs)
            except (VirtimeError, OSError, ValueError) as exc:
                raise ToolError(_message(exc)) from exc

        return run_async  # type: ignore[return-value]

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (VirtimeError, OSError, ValueError) as exc:
            raise ToolError(_message(exc)) from exc

    return run  # type: ignore[return-value]
