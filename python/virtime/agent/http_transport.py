"""Streamable HTTP for ``virtime mcp --http``: loopback only, and a random token on every request.

The socket is bound to ``127.0.0.1`` (never a wildcard address), so other machines cannot
connect; the token keeps out other local users and web pages, which can reach a loopback port:
every request must carry ``Authorization: Bearer <token>`` or is answered 401 before the MCP
app sees it. The SDK's own DNS-rebinding check (Host and Origin must be loopback) stays on.
"""

from __future__ import annotations

import secrets
import socket
import sys
from typing import Any

from virtime.agent.config import AgentConfig

__all__ = ["HOST", "TokenGate", "serve_http"]

HOST = "127.0.0.1"


class TokenGate:
    """ASGI middleware: HTTP requests without ``Authorization: Bearer <token>`` get 401."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self._expected = f"Bearer {token}".encode()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            given = dict(scope.get("headers") or []).get(b"authorization", b"")
            if not secrets.compare_digest(given, self._expected):
                body = b"virtime mcp: missing or wrong token (Authorization: Bearer <token>)\n"
                await send({"type": "http.response.start", "status": 401,
                            "headers": [(b"content-type", b"text/plain"),
                                        (b"content-length", str(len(body)).encode()),
                                        (b"www-authenticate", b"Bearer")]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def serve_http(config: AgentConfig, port: int = 0, token: str | None = None) -> None:
    """Serves streamable HTTP on ``127.0.0.1:port`` (0: a free port) until interrupted.

    Prints the URL and the token on stderr (stdout stays free for the caller).
    """
    import uvicorn

    from virtime.agent.server import build_server

    token = token or secrets.token_urlsafe(24)
    app, state = build_server(config)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, port))
    sock.listen(128)  # before the banner: a client reading it can connect at once
    url = f"http://{HOST}:{sock.getsockname()[1]}/mcp"
    print(f"virtime mcp: streamable HTTP at {url} ; send the header "
          f"'Authorization: Bearer {token}'", file=sys.stderr, flush=True)
    gated = TokenGate(app.streamable_http_app(host=HOST), token)
    server = uvicorn.Server(uvicorn.Config(gated, log_level="warning", lifespan="on"))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        state.close()
