"""The viewer in headless Chromium: it loads from the local server only, a channel toggled on
changes the pixels where the virtual mIF has signal and nowhere else (against the compositing
formula in numpy), zooming requests finer tiles, hover shows the tile, and the token and error
pages hold in a real browser. Skipped without Chromium."""

from __future__ import annotations

import json

import numpy as np
import pytest

from virtime.view import ViewServer, ViewSource

pytestmark = pytest.mark.slow

PANEL = 300  # px, the side panel (viewer.css); the map fills the rest of the 1200 x 800 window
MAP_W, MAP_H = 900, 800
S = 0.5  # screen px per level-0 px
CX, CY = 512, 384


@pytest.fixture(scope="module")
def server(output_dir):
    with ViewServer(ViewSource(output_dir)) as srv:
        yield srv


def _shot(browser, server, hash_: str) -> np.ndarray:
    browser.goto(server.url + "#" + hash_)
    browser.wait_for("window.virtimeView && window.virtimeView.ready")
    return browser.screenshot().astype(np.int16)


def _screen_box(syn, box, margin: int) -> tuple[slice, slice]:
    """Screen rows/cols of a canvas box (r0, r1, c0, c1), shrunk (margin > 0) or grown (< 0)."""
    r0, r1, c0, c1 = box

    def sx(c):
        return PANEL + MAP_W / 2 + (c * syn.F - CX) * S

    def sy(r):
        return MAP_H / 2 + (r * syn.F - CY) * S

    return (slice(int(sy(r0)) + margin, int(sy(r1)) - margin),
            slice(int(sx(c0)) + margin, int(sx(c1)) - margin))


def _rgb(hex_: str) -> np.ndarray:
    v = int(hex_.lstrip("#"), 16)
    return np.array([(v >> 16) & 255, (v >> 8) & 255, v & 255], float)


def test_page_loads_from_the_server_only(browser, server):
    browser.goto(server.url)
    browser.wait_for("window.virtimeView && window.virtimeView.ready")
    assert browser.evaluate("window.virtimeView.error") is None
    assert browser.evaluate("window.virtimeView.firstPaintMs") < 10_000
    urls = browser.requested_urls()
    assert urls and all(u.startswith(server.url) for u in urls), urls
    names = browser.evaluate("Array.from(document.querySelectorAll('.ch .name'))"
                             ".map(e => e.textContent)")
    assert len(names) == 23 and names[14] == "CD8"
    on = browser.evaluate("Array.from(document.querySelectorAll('.ch.on')).map(e => e.dataset.channel)")
    assert on == ["DAPI", "CD8", "CK"]  # the summary's thumbnail channels


def test_channel_toggle_changes_only_pixels_with_signal(browser, server, syn):
    view = f"x={CX}&y={CY}&s={S}"
    off = _shot(browser, server, view + "&ch=")
    on = _shot(browser, server, view + "&ch=CD8&op=CD8:0.8")
    diff = np.abs(on - off).max(axis=2)
    inside = _screen_box(syn, syn.CD8_BOX, 3)
    outside = np.zeros(diff.shape, bool)
    outside[:, PANEL:] = True  # the map (the panel shows the channel's sliders)
    outside[_screen_box(syn, syn.CD8_BOX, -3)] = False
    assert diff[inside].min() > 20
    assert diff[outside].max() == 0
    expect = off[inside] * 0.2 + 0.8 * _rgb("#FF00FF")
    np.testing.assert_allclose(on[inside], expect, atol=2.5)
    # two channels: CD8 then CK laid over it (registry order) where they overlap
    both = _shot(browser, server, view + "&ch=CD8,CK&op=CD8:0.8,CK:0.5")
    r0 = max(syn.CD8_BOX[0], syn.CK_BOX[0])
    c0 = max(syn.CD8_BOX[2], syn.CK_BOX[2])
    overlap = _screen_box(syn, (r0, syn.CD8_BOX[1], c0, syn.CD8_BOX[3]), 3)
    cd8 = off[overlap] * 0.2 + 0.8 * _rgb("#FF00FF")
    np.testing.assert_allclose(both[overlap], cd8 * 0.5 + 0.5 * _rgb("#00FFFF"), atol=2.5)
    ck_only = _screen_box(syn, (syn.CD8_BOX[1], syn.CK_BOX[1], syn.CK_BOX[2], syn.CK_BOX[3]), 3)
    np.testing.assert_allclose(both[ck_only], off[ck_only] * 0.5 + 0.5 * _rgb("#00FFFF"), atol=2.5)


def test_dark_background_and_contrast(browser, server, syn):
    view = f"x={CX}&y={CY}&s={S}&bg=dark"
    dark = _shot(browser, server, view + "&ch=CD8&op=CD8:1")
    inside = _screen_box(syn, syn.CD8_BOX, 3)
    np.testing.assert_allclose(dark[inside], np.broadcast_to(_rgb("#FF00FF"), dark[inside].shape),
                               atol=1)
    slide_area = _screen_box(syn, (0, 192, 0, 256), 3)
    outside = np.ones(dark.shape[:2], bool)
    outside[_screen_box(syn, syn.CD8_BOX, -3)] = False
    assert dark[slide_area][outside[slide_area]].max() == 0  # no H&E on the dark background
    # a window whose minimum is above the signal hides it
    hidden = _shot(browser, server, view + "&ch=CD8&op=CD8:1&lo=CD8:254&hi=CD8:255")
    np.testing.assert_allclose(hidden[inside], np.broadcast_to(_rgb("#FF00FF"), hidden[inside].shape),
                               atol=1)  # 255 stays at the top of the window
    gone = _shot(browser, server, view + "&ch=CD8&op=CD8:0")
    assert gone[inside].max() == 0


def test_zoom_requests_finer_tiles(browser, output_dir):
    with ViewServer(ViewSource(output_dir)) as srv:  # a new origin: nothing in the browser cache
        _zoom(browser, srv)


def _zoom(browser, server):
    browser.goto(server.url + f"#x={CX}&y={CY}&s=0.2&ch=CD8")
    browser.wait_for("window.virtimeView.ready")
    assert browser.evaluate("window.virtimeView.zoom") == 0
    before = len(server.requests)
    for _ in range(2):  # two wheel notches up at the centre of the map: x 2.49 each
        browser.call("Input.dispatchMouseEvent", type="mouseWheel", x=PANEL + MAP_W / 2,
                     y=MAP_H / 2, deltaX=0, deltaY=-500)
    browser.wait_for("window.virtimeView.zoom === 2 && window.virtimeView.ready")
    new = [p for p, status in list(server.requests)[before:] if status == 200]
    assert any(p.startswith("he/2/") for p in new) and any(p.startswith("mif/14/2/") for p in new)
    assert not any(p.startswith(("he/0/", "he/1/")) for p in new)
    scale = browser.evaluate("document.getElementById('scalebar-label').textContent")
    assert scale.endswith("µm")


def test_hover_shows_position_and_tile_statistics(browser, server):
    browser.goto(server.url + f"#x={CX}&y={CY}&s=0.5")
    browser.wait_for("window.virtimeView.ready")
    # level-0 (300, 200) is at screen (750 + (300-512)/2, 400 + (200-384)/2)
    browser.call("Input.dispatchMouseEvent", type="mouseMoved", x=PANEL + 450 - 106, y=400 - 92)
    browser.wait_for("document.getElementById('hover').textContent.indexOf('tile 1 ') >= 0")
    cursor = browser.evaluate("document.getElementById('cursor').textContent")
    assert cursor.startswith("x 300, y 200 px") and "150.0, 100.0 µm" in cursor
    hover = browser.evaluate("document.getElementById('hover').textContent")
    assert "CD8 1.00" in hover and "2.0%" in hover  # value under the cursor; tile 1's CD8 stat


def test_tissue_outline_is_drawn(browser, server, syn):
    view = f"x={CX}&y={CY}&s=1"
    shot = _shot(browser, server, view + "&ch=&mask=1")
    # mask rows 20.., cols 30..: level-0 (120, 80) -> screen (750 - 392, 400 - 304)
    y, x = MAP_H // 2 + (20 * syn.F - CY), PANEL + MAP_W // 2 + (30 * syn.F - CX)
    np.testing.assert_array_equal(shot[y + 10, x], [255, 215, 0])
    np.testing.assert_array_equal(shot[y, x + 10], [255, 215, 0])


def test_browser_without_token_and_error_page(browser, server, tmp_path, syn):
    browser.goto(f"http://127.0.0.1:{server.port}/")
    assert "needs the token" in browser.evaluate("document.body.textContent")
    out = syn.make_output(tmp_path, "S4")
    with ViewServer(ViewSource(out)) as srv:
        (out / "summary.json").write_text(json.dumps({"status": "running"}))
        browser.goto(srv.url)
        text = browser.evaluate("document.getElementById('virtime-error').textContent")
        assert "not finished" in text
