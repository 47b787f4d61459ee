"""The viewer's server: loopback only, the token required, routes, the error page, and the CLI's
one-line error for a missing or unfinished folder."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import urllib.error
import urllib.request

import numpy as np
import pytest

from virtime.channels import channel_index
from virtime.cli import main
from virtime.view import ViewServer, ViewSource


@pytest.fixture(scope="module")
def server(output_dir):
    with ViewServer(ViewSource(output_dir)) as srv:
        yield srv


def _get(url: str) -> tuple[int, bytes, str]:
    try:
        with urllib.request.urlopen(url, timeout=20) as r:
            return r.status, r.read(), r.headers.get("Content-Type", "")
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers.get("Content-Type", "")


def test_binds_loopback_with_a_random_token(server, output_dir):
    assert server.host == "127.0.0.1" and server.port > 0
    assert len(server.token) >= 16
    with ViewServer(ViewSource(output_dir)) as other:
        assert other.token != server.token and other.port != server.port


def test_token_is_required(server):
    base = f"http://127.0.0.1:{server.port}/"
    for url in (base, base + "info.json", base + "he/0/0_0.jpg", base + "wrong-token/info.json",
                base + server.token[:-1] + "/info.json", base + "static/viewer.js"):
        status, body, _ = _get(url)
        assert status == 403, url
        assert b"token" in body
    status, body, ctype = _get(server.url + "info.json")
    assert status == 200 and ctype == "application/json"
    assert json.loads(body)["width"] == 1024


def test_routes_serve_tiles_and_static_files(server, syn):
    from PIL import Image

    status, body, ctype = _get(server.url + f"mif/{channel_index('CD8')}/2/0_0.png")
    assert status == 200 and ctype == "image/png"
    tile = np.asarray(Image.open(io.BytesIO(body)))
    np.testing.assert_array_equal(tile, server.source.mif_array(channel_index("CD8"), 2, 0, 0))
    status, body, ctype = _get(server.url + "he/1/0_0.jpg")
    assert status == 200 and ctype == "image/jpeg"
    assert Image.open(io.BytesIO(body)).size == (256, 256)
    status, body, _ = _get(server.url + "at?x=300&y=200&c=14")
    assert json.loads(body)["values"] == {"CD8": 255}
    for name, kind in (("viewer.js", "javascript"), ("viewer.css", "css")):
        status, body, ctype = _get(server.url + "static/" + name)
        assert status == 200 and kind in ctype and len(body) > 500
    assert _get(server.url + "static/../tiles.py")[0] == 404
    assert _get(server.url + "he/9/0_0.jpg")[0] == 400  # zoom out of range
    page = _get(server.url)[1].decode()
    assert "static/viewer.js" in page and "http" not in page.replace("http-equiv", "")


def test_page_turns_into_an_error_page_when_the_folder_is_no_longer_done(tmp_path, syn):
    out = syn.make_output(tmp_path, "S3")
    with ViewServer(ViewSource(out)) as srv:
        assert _get(srv.url)[0] == 200
        (out / "summary.json").write_text(json.dumps({"status": "running"}))  # a rerun started
        status, body, _ = _get(srv.url)
        assert status == 503
        assert b"id='virtime-error'" in body and b"not finished" in body


def test_cli_gives_one_line_errors(output_dir, tmp_path, capsys):
    assert main(["view", str(tmp_path / "missing"), "--no-browser"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such output folder" in err
    unfinished = tmp_path / "unfinished"
    shutil.copytree(output_dir, unfinished)
    (unfinished / "summary.json").unlink()
    assert main(["view", str(unfinished), "--no-browser"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not finished" in err
    slide = json.loads((output_dir / "summary.json").read_text())["slide"]
    assert main(["view", slide, "--no-browser"]) == 2
    assert "-o OUT" in capsys.readouterr().err
    assert main(["view", str(tmp_path / "x.svs"), "-o", str(tmp_path), "--no-browser"]) == 2


@pytest.mark.slow
def test_cli_no_browser_prints_the_url_and_serves(output_dir):
    slide = json.loads((output_dir / "summary.json").read_text())["slide"]
    proc = subprocess.Popen([sys.executable, "-m", "virtime.cli", "view", slide, "-o",
                             str(output_dir.parent), "--no-browser"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert "http://127.0.0.1:" in line, proc.stderr.read() if proc.poll() is not None else line
        url = line.split(" at ", 1)[1].split()[0]
        assert _get(url + "info.json")[0] == 200
        assert _get(url.rsplit("/", 2)[0] + "/info.json")[0] == 403
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
