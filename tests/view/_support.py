"""Test support: a synthetic translated slide with planted signal; headless Chromium (DevTools).

The output folder is built directly (no model), so every pixel of the virtual mIF is known: CD8
is 1 in one rectangle, CK 1 in another overlapping it, everything else 0. Chromium is driven over
the DevTools protocol with tornado's websocket client (tornado comes with dask.distributed).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from virtime.channels import CHANNEL_NAMES, channel_index

SLIDE_WH = (1024, 768)  # level 0, 0.5 µm/px
SLIDE_MPP = 0.5
OUT_MPP = 2.0  # canvas pixel = 4 level-0 pixels
F = 4
CANVAS = (192, 256)  # (h, w)
CD8_BOX = (40, 100, 60, 140)  # canvas rows r0:r1, cols c0:c1
CK_BOX = (70, 150, 100, 200)
TILE_PX = 256  # level-0 size of a tile-table tile


def canvas_truth() -> np.ndarray:
    probs = np.zeros((len(CHANNEL_NAMES), *CANVAS), np.float32)
    r0, r1, c0, c1 = CD8_BOX
    probs[channel_index("CD8"), r0:r1, c0:c1] = 1.0
    r0, r1, c0, c1 = CK_BOX
    probs[channel_index("CK"), r0:r1, c0:c1] = 1.0
    return probs


def make_output(root: Path, slide_id: str = "S1", *, out_name: str = "out",
                features: dict | None = None, slide: Path | None = None) -> Path:
    """Writes OUT/S1 as virtime translate would (summary last)."""
    from virtime.features import write_features
    from virtime.simulate.slides import make_slide
    from virtime.io import atomic_write_json
    from virtime.stitch.canvas import StreamingCanvas

    if slide is None:  # several outputs may share one H&E (rendering it is the slow part)
        (root / "slides").mkdir(parents=True, exist_ok=True)
        slide = make_slide(root / "slides" / f"{slide_id}.svs", *SLIDE_WH, mpp=SLIDE_MPP, seed=5)
    out = root / out_name / slide_id
    out.mkdir(parents=True)
    canvas = StreamingCanvas(out / "mif.ome.zarr", CANVAS, factor=1, mpp=OUT_MPP, chunk=64,
                             name=slide_id)
    canvas.add(canvas_truth(), 0, 0)
    canvas.close()
    mask = np.zeros(CANVAS, bool)
    mask[20:170, 30:230] = True
    np.save(out / "tissue_mask.npy", mask)
    rows = []
    for k, (ty, tx) in enumerate(itertools.product(range(0, 768, TILE_PX), range(0, 1024, TILE_PX))):
        row = {"tile": k, "x": tx, "y": ty, "tissue_fraction": 0.5 + k / 100}
        for n in CHANNEL_NAMES:
            row[f"{n}.positive_fraction"] = (k + 1) / 100 if n == "CD8" else 0.0
            row[f"{n}.mean_probability"] = 0.0
        rows.append(row)
    pd.DataFrame(rows).to_parquet(out / "tiles.parquet")
    feats = features or {"CD8.density": 0.25, "CK.density": 0.4, "CD8.tumour_density": 0.3}
    write_features([{"slide_id": slide_id, **feats}], out / "features.parquet", model_hash="test")
    # tile_size 64 at the canvas's model mpp (factor 1 -> 2 µm/px) = 256 level-0 pixels
    atomic_write_json(out / "summary.json", {
        "status": "done", "slide": str(slide), "slide_id": slide_id, "slide_mpp": SLIDE_MPP,
        "output_mpp": OUT_MPP, "tiles_total": len(rows), "tiles_done": len(rows),
        "config": {"tile_size": 64, "thumbnail_channels": ["DAPI", "CD8", "CK"]}})
    return out


def chromium_exe() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium not installed (apt-get install chromium)")
    return exe


class Browser:
    """Headless Chromium and one page, driven over the DevTools protocol (synchronous calls)."""

    def __init__(self, exe: str, width: int = 1200, height: int = 800) -> None:
        from tornado.websocket import websocket_connect

        self._profile = tempfile.TemporaryDirectory(prefix="virtime-chromium-",
                                                    ignore_cleanup_errors=True)
        self.proc = subprocess.Popen(
            [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--no-first-run", "--no-default-browser-check", "--disable-extensions",
             "--disable-background-networking", "--hide-scrollbars", "--mute-audio",
             "--remote-debugging-port=0", f"--user-data-dir={self._profile.name}",
             f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = Path(self._profile.name) / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.is_file() and len(port_file.read_text().splitlines()) >= 2):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.close()
                raise RuntimeError("chromium did not start its DevTools endpoint")
            time.sleep(0.1)
        port = int(port_file.read_text().splitlines()[0])
        self.loop = asyncio.new_event_loop()
        targets = self._http_json(port)
        page = next(t for t in targets if t.get("type") == "page")

        async def connect():
            return await websocket_connect(page["webSocketDebuggerUrl"], max_message_size=2**28)

        self.ws = self.loop.run_until_complete(connect())
        self._ids = itertools.count(1)
        self.events: list[dict] = []
        self.call("Page.enable")
        self.call("Network.enable")
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                  deviceScaleFactor=1, mobile=False)

    def _http_json(self, port: int) -> list[dict]:
        import urllib.request

        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
                    return json.loads(r.read())
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def call(self, method: str, timeout: float = 60, **params) -> dict:
        msg_id = next(self._ids)
        async def send():
            await self.ws.write_message(json.dumps({"id": msg_id, "method": method,
                                                    "params": params}))

        async def receive(left):
            return await asyncio.wait_for(self.ws.read_message(), left)

        self.loop.run_until_complete(send())
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(method)
            raw = self.loop.run_until_complete(receive(left))
            if raw is None:
                raise RuntimeError("DevTools connection closed")
            msg = json.loads(raw)
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)

    def evaluate(self, expression: str):
        res = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in res:
            raise RuntimeError(f"{expression}: {res['exceptionDetails']}")
        return res["result"].get("value")

    def goto(self, url: str) -> None:
        self.call("Page.navigate", url="about:blank")  # a fresh document, even for a new #hash
        self.wait_for("location.href === 'about:blank' && document.readyState === 'complete'")
        self.events.clear()
        self.call("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete'")

    def wait_for(self, expression: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not self.evaluate(f"!!({expression})"):
            if time.monotonic() > deadline:
                raise TimeoutError(expression)
            time.sleep(0.05)

    def screenshot(self) -> np.ndarray:
        from PIL import Image
        import io

        data = self.call("Page.captureScreenshot", format="png")["data"]
        return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"))

    def requested_urls(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.events
                if e.get("method") == "Network.requestWillBeSent"]

    def close(self) -> None:
        ws = getattr(self, "ws", None)
        if ws is not None:
            async def close_socket() -> None:
                # Inside the loop: tornado makes its close frame's Future on the current loop,
                # and an asyncio.run elsewhere in the session leaves the main thread without one.
                ws.close()
                await asyncio.sleep(0.05)

            self.loop.run_until_complete(close_socket())
        loop = getattr(self, "loop", None)
        if loop is not None:
            loop.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._profile.cleanup()


class ReadSpy:
    """A slide that records the bytes of every ``read_region`` and passes everything else on."""

    def __init__(self, slide) -> None:
        self._slide = slide
        self.read_bytes: list[int] = []

    def __getattr__(self, name):
        return getattr(self._slide, name)

    def read_region(self, x, y, level, w, h):
        self.read_bytes.append(w * h * 3)
        return self._slide.read_region(x, y, level, w, h)
