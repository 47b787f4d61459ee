"""MCP resources: a translated slide's summary, thumbnail, per-channel previews and features,
and the reports written under ``--output``.

URIs (``slide_id`` is a folder name under ``--output``)::

    virtime://slides/{slide_id}/summary             JSON, the compact summary
    virtime://slides/{slide_id}/thumbnail           PNG, at most max_image_px on its long side
    virtime://slides/{slide_id}/channels/{channel}  JPEG preview of one virtual channel
    virtime://slides/{slide_id}/features            JSON, the slide's features row
    virtime://reports/{name}                        HTML report written by the report tool
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from mcp.server.mcpserver.exceptions import ResourceError

from virtime.agent.limits import fit_result, table_rows
from virtime.agent.state import AgentState
from virtime.errors import VirtimeError

__all__ = ["register_resources"]

_MAX_REPORT_BYTES = 20 * 2**20  # a report with many figures is a few MB; more is refused


def _png_within(path: Path, max_px: int) -> bytes:
    """The PNG at ``path``, downsized so its longer side is at most ``max_px``."""
    from PIL import Image

    with Image.open(path) as img:
        if max(img.size) <= max_px:
            return path.read_bytes()
        img.thumbnail((max_px, max_px))
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        return buf.getvalue()


def register_resources(app: Any, state: AgentState) -> None:
    """Adds the resource templates to ``app`` (an ``MCPServer``)."""
    from virtime.io import SlideFolder

    def folder_of(slide_id: str) -> SlideFolder:
        try:
            folder = SlideFolder(state.guard.readable(state.guard.out / slide_id, kind="folder"))
            folder.require_done()
        except (VirtimeError, OSError) as exc:
            raise ResourceError(str(exc)) from exc
        return folder

    @app.resource("virtime://slides/{slide_id}/summary", mime_type="application/json")
    def slide_summary_resource(slide_id: str) -> str:
        """A translated slide's summary (tiles, tissue, timings, model hash)."""
        from virtime.agent.tools_slides import slide_summary

        return json.dumps(slide_summary(folder_of(slide_id).path))

    @app.resource("virtime://slides/{slide_id}/thumbnail", mime_type="image/png")
    def slide_thumbnail(slide_id: str) -> bytes:
        """The slide's virtual mIF thumbnail (DAPI, CD8, CK composite)."""
        return _png_within(folder_of(slide_id).thumbnail, state.config.max_image_px)

    @app.resource("virtime://slides/{slide_id}/channels/{channel}", mime_type="image/jpeg")
    def slide_channel(slide_id: str, channel: str) -> bytes:
        """One virtual channel's probability map as a preview image (its colour on black)."""
        from virtime.channels import CHANNEL_NAMES
        from virtime.slide import Slide
        from virtime.view import slide_panels

        folder = folder_of(slide_id)
        if channel not in CHANNEL_NAMES:
            raise ResourceError(f"{channel}: not a channel; use one of {', '.join(CHANNEL_NAMES)}")
        try:
            he = Slide(state.guard.readable(folder.summary()["slide"]))
            return slide_panels(folder.path, [channel], max_px=state.config.max_image_px,
                                slide=he)[channel]
        except (VirtimeError, OSError) as exc:
            raise ResourceError(str(exc)) from exc

    @app.resource("virtime://slides/{slide_id}/features", mime_type="application/json")
    def slide_features_resource(slide_id: str) -> str:
        """The slide's features row (densities, spatial metrics) and the table's metadata."""
        from virtime.features import read_features

        folder = folder_of(slide_id)
        frame, meta = read_features(folder.features_file)
        body = fit_result({"features": table_rows(frame, 1), "metadata": meta},
                          state.config.max_result_bytes)
        return json.dumps(body)

    @app.resource("virtime://reports/{name}", mime_type="text/html")
    def report_resource(name: str) -> str:
        """An HTML report the report tool wrote under --output."""
        try:
            path = state.guard.readable(state.guard.out / name)
        except (VirtimeError, OSError) as exc:
            raise ResourceError(str(exc)) from exc
        if path.suffix.lower() != ".html":
            raise ResourceError(f"{name}: not a report (.html)")
        if path.stat().st_size > _MAX_REPORT_BYTES:
            raise ResourceError(f"{name}: {path.stat().st_size} bytes, over the "
                                f"{_MAX_REPORT_BYTES} byte limit; open {path} instead")
        return path.read_text(encoding="utf-8")
