"""The viewer checks what it reads: a lost chunk of the virtual mIF is an error tile naming it
(never zeros with HTTP 200), and a corrupt one is the same error, not a dropped connection with a
traceback on the server."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from virtime.channels import channel_index
from virtime.errors import InputDataError
from virtime.view import ViewServer, ViewSource

CD8 = channel_index("CD8")


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=20) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _chunk(out, channel: int, row: int, col: int):
    """Level-0 chunk file of ``channel`` at chunk ``(row, col)`` (64-px chunks, Zarr v2 '/')."""
    path = out / "mif.ome.zarr" / "0" / str(channel) / str(row) / str(col)
    assert path.is_file()
    return path


def test_a_lost_chunk_is_an_error_tile_not_zeros(tmp_path, syn, capfd):
    out = syn.make_output(tmp_path, "S")
    r0, r1, c0, c1 = syn.CD8_BOX  # CD8 = 1 in rows 40:100, cols 60:140 of the canvas
    lost = _chunk(out, CD8, r0 // 64, c0 // 64)
    lost.unlink()
    source = ViewSource(out)
    with pytest.raises(InputDataError, match="chunk missing") as info:
        source.mif_array(CD8, source.max_zoom, 0, 0)  # level 0: reads that chunk
    assert str(lost) in str(info.value) and "--force" in str(info.value)
    with ViewServer(source) as srv:
        status, body = _get(srv.url + f"mif/{CD8}/{source.max_zoom}/0_0.png")
        assert status == 500 and b"chunk missing" in body and str(lost).encode() in body
        # the value under the cursor reads the same chunk
        status, body = _get(srv.url + f"at?x={(c0 + 1) * 4}&y={(r0 + 1) * 4}&c={CD8}")
        assert status == 500 and b"chunk missing" in body
        # other channels and the H&E still come
        assert _get(srv.url + f"mif/{channel_index('CK')}/{source.max_zoom}/0_0.png")[0] == 200
        assert _get(srv.url + "he/0/0_0.jpg")[0] == 200
    assert "Traceback" not in capfd.readouterr().err


def test_a_corrupt_chunk_is_an_error_tile_not_a_dropped_connection(tmp_path, syn, capfd):
    out = syn.make_output(tmp_path, "S")
    r0, _, c0, _ = syn.CD8_BOX
    bad = _chunk(out, CD8, r0 // 64, c0 // 64)
    bad.write_bytes(b"\x02\x01" + bytes(range(256)) * 4)  # not a Blosc chunk of this array
    source = ViewSource(out)
    with ViewServer(source) as srv:
        status, body = _get(srv.url + f"mif/{CD8}/{source.max_zoom}/0_0.png")
        assert status == 500 and b"cannot be decoded" in body and str(bad).encode() in body
        assert _get(srv.url + "info.json")[0] == 200  # the connection and the server go on
    assert "Traceback" not in capfd.readouterr().err


def test_the_page_and_galleries_check_the_level_they_read(tmp_path, syn):
    """Old code: slide_panels (the slide page, the report galleries) drew a lost chunk as black."""
    from virtime.view import slide_panels

    out = syn.make_output(tmp_path, "S")
    r0, _, c0, _ = syn.CD8_BOX
    # max_px 128: pyramid level 1 (96 x 128, 64-px chunks); CD8's box starts in chunk (0, 0)
    lost = out / "mif.ome.zarr" / "1" / str(CD8) / str(r0 // 128) / str(c0 // 128)
    assert lost.is_file()
    lost.unlink()
    with pytest.raises(InputDataError, match="chunk missing") as info:
        slide_panels(out, ["CD8"], max_px=128)
    assert str(lost) in str(info.value)
    assert set(slide_panels(out, ["CK"], max_px=128, composite_channels=("CK",))) >= {"CK"}
