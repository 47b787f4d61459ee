"""The local viewer's HTTP server: loopback only, a random token in every URL, tiles on demand.

Standard library only (:class:`http.server.ThreadingHTTPServer`): the viewer serves one user on
one machine, so a thread per connection is plenty and nothing needs installing. Every URL starts
with ``/<token>/`` (so the page's relative URLs carry it); anything else is refused with 403,
which keeps other local users and web pages that guess the port out. Routes under the token::

    /                       the viewer page (or an error page if the folder stopped being done)
    /static/<file>          the page's JavaScript and CSS, shipped in virtime/view/static
    /info.json              sizes, scales, channels (ViewSource.info)
    /he/<z>/<x>_<y>.jpg     H&E tile
    /mif/<c>/<z>/<x>_<y>.png   virtual mIF channel c, grey
    /mask/<z>/<x>_<y>.png   tissue outline
    /at?x=&y=&c=3,14        values and tile statistics at a level-0 point (JSON)
"""

from __future__ import annotations

import html
import json
import logging
import re
import secrets
import threading
import time
from collections import deque
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

from virtime.errors import InputDataError, InvalidArgumentError, VirtimeError
from virtime.view.tiles import ViewSource, check_output_dir

__all__ = ["ViewServer", "error_page"]

log = logging.getLogger(__name__)

_STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8"}
_TILE = re.compile(r"^(he|mask)/(\d+)/(\d+)_(\d+)\.(jpg|png)$")
_MIF = re.compile(r"^mif/(\d+)/(\d+)/(\d+)_(\d+)\.png$")


def error_page(message: str, title: str = "virtime view: nothing to show") -> str:
    """A small self-contained HTML page stating ``message``."""
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title><link rel='icon' href='data:,'>"
            "<style>body{font-family:sans-serif;margin:3em;color:#222}"
            ".err{border-left:4px solid #c33;padding:.5em 1em;background:#fee}</style></head>"
            f"<body><h1>{html.escape(title)}</h1><p class='err' id='virtime-error'>"
            f"{html.escape(message)}</p></body></html>")


def _static(name: str) -> bytes:
    return resources.files("virtime.view").joinpath("static", name).read_bytes()


class ViewServer:
    """Serve one slide folder to the browser on ``127.0.0.1``.

    Parameters
    ----------
    source
        The opened slide folder.
    port
        0 (default) picks a free port.
    token
        URL token; a fresh random one (``secrets.token_urlsafe``) by default.

    Attributes
    ----------
    requests
        The last 10,000 requests as ``(path without token, status)``: what the page asked for.
    """

    def __init__(self, source: ViewSource, *, port: int = 0, token: str | None = None) -> None:
        self.source = source
        self.token = token or secrets.token_urlsafe(16)
        self.requests: deque[tuple[str, int]] = deque(maxlen=10_000)
        self.started = time.perf_counter()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def host(self) -> str:
        return str(self._httpd.server_address[0])

    @property
    def url(self) -> str:
        """The page's URL, token included."""
        return f"http://127.0.0.1:{self.port}/{self.token}/"

    def start(self) -> ViewServer:
        """Serve on a background thread (once; a started server stays as it is); returns self."""
        if self._thread is not None:
            return self
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="virtime-view",
                                        daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve on this thread until interrupted."""
        self._httpd.serve_forever()

    def wait(self) -> None:
        """Block until the background server stops (Ctrl-C reaches the caller meanwhile)."""
        while self._thread is not None and self._thread.is_alive():
            self._thread.join(0.5)

    def close(self) -> None:
        """Stop serving and release the socket."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> ViewServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- routing -------------------------------------------------------------------------------
    def route(self, path: str, query: dict[str, list[str]]) -> tuple[int, str, bytes]:
        """``(status, content type, body)`` for a path below the token."""
        src = self.source
        if path in ("", "index.html"):
            try:
                check_output_dir(src.dir)
            except InputDataError as exc:
                return (HTTPStatus.SERVICE_UNAVAILABLE, _STATIC_TYPES[".html"],
                        error_page(str(exc)).encode())
            page = _static("viewer.html").decode().replace("{{SLIDE_ID}}", html.escape(src.slide_id))
            return HTTPStatus.OK, _STATIC_TYPES[".html"], page.encode()
        if path.startswith("static/"):
            name = path[len("static/"):]
            ext = name[name.rfind("."):] if "." in name else ""
            if "/" in name or ext not in _STATIC_TYPES:
                return HTTPStatus.NOT_FOUND, "text/plain", b"not found"
            try:
                return HTTPStatus.OK, _STATIC_TYPES[ext], _static(name)
            except FileNotFoundError:
                return HTTPStatus.NOT_FOUND, "text/plain", b"not found"
        if path == "info.json":
            return HTTPStatus.OK, "application/json", json.dumps(src.info()).encode()
        if path == "at":
            x, y = float(query.get("x", ["nan"])[0]), float(query.get("y", ["nan"])[0])
            chans = [int(c) for c in query.get("c", [""])[0].split(",") if c.strip()]
            return HTTPStatus.OK, "application/json", json.dumps(src.at(x, y, chans)).encode()
        m = _TILE.match(path)
        if m:
            kind, z, tx, ty, ext = m.groups()
            if kind == "he" and ext == "jpg":
                return HTTPStatus.OK, "image/jpeg", src.he_tile(int(z), int(tx), int(ty))
            if kind == "mask" and ext == "png":
                return HTTPStatus.OK, "image/png", src.mask_tile(int(z), int(tx), int(ty))
        m = _MIF.match(path)
        if m:
            c, z, tx, ty = (int(v) for v in m.groups())
            return HTTPStatus.OK, "image/png", src.mif_tile(c, z, tx, ty)
        return HTTPStatus.NOT_FOUND, "text/plain", b"not found"

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                parts = urlsplit(self.path)
                prefix = f"/{server.token}/"
                if not secrets.compare_digest(parts.path[:len(prefix)].encode(), prefix.encode()):
                    self._send(HTTPStatus.FORBIDDEN, "text/html; charset=utf-8", error_page(
                        "This viewer needs the token in its URL (printed by virtime view).",
                        "403 forbidden").encode(), "-")
                    return
                rel = parts.path[len(prefix):]
                try:
                    status, ctype, body = server.route(rel, parse_qs(parts.query))
                except InputDataError as exc:  # a damaged output file: the server's side
                    log.warning("view: %s: %s", rel, exc)
                    status, ctype, body = (HTTPStatus.INTERNAL_SERVER_ERROR, "text/plain",
                                           str(exc).encode())
                except (InvalidArgumentError, ValueError) as exc:
                    status, ctype, body = HTTPStatus.BAD_REQUEST, "text/plain", str(exc).encode()
                except VirtimeError as exc:
                    log.warning("view: %s: %s", rel, exc)
                    status, ctype, body = (HTTPStatus.INTERNAL_SERVER_ERROR, "text/plain",
                                           str(exc).encode())
                self._send(status, ctype, body, rel)

            def _send(self, status: int, ctype: str, body: bytes, rel: str) -> None:
                server.requests.append((rel, int(status)))
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                immutable = status == 200 and rel.startswith(("he/", "mif/", "mask/"))
                self.send_header("Cache-Control", "private, max-age=3600" if immutable
                                 else "no-store")
                self.send_header("X-Content-Type-Options", "nosniff")
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):  # the page moved on
                    pass

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                log.debug("view: " + format, *args)

        return Handler
