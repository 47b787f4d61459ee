"""``virtime.view(...)``: the viewer from Python, the same server ``virtime view`` starts."""

from __future__ import annotations

import inspect
import json
import socket
import urllib.request

import pytest

import virtime
from virtime.errors import InvalidArgumentError
from virtime.view import ViewServer, ViewSource


def _get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=20) as r:
        return r.status, r.read()


def test_view_serves_the_folder_as_the_server_renders_it(output_dir):
    assert inspect.signature(virtime.view) == inspect.signature(virtime.view.view)
    server = virtime.view(output_dir, open_browser=False)
    try:
        assert isinstance(server, ViewServer) and server.host == "127.0.0.1"
        reference = ViewServer(ViewSource(output_dir))  # routes answered without the network
        try:
            for path in ("info.json", "mif/0/2/0_0.png"):
                status, body = _get(server.url + path)
                assert status == 200 and body == reference.route(path, {})[2], path
        finally:
            reference.close()
        assert json.loads(_get(server.url + "info.json")[1])["width"] == 1024
    finally:
        server.close()


def test_view_finds_the_folder_from_the_slide_file(output_dir):
    slide = json.loads((output_dir / "summary.json").read_text())["slide"]
    with virtime.view(slide, output=output_dir.parent, open_browser=False) as server:
        assert server.source.slide_id == output_dir.name
        assert _get(server.url + "info.json")[0] == 200
    with pytest.raises(InvalidArgumentError, match="-o OUT"):
        virtime.view(slide, open_browser=False)


def test_view_names_a_taken_port(output_dir):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(InvalidArgumentError, match=f"port {port}: .*--port"):
            virtime.view(output_dir, port=port, open_browser=False)
