"""MCP tools on slides: ``list_slides``, ``slide_info``, ``translate`` and ``view_url``.

Each tool checks its paths with the server's :class:`~virtime.agent.guardrails.PathGuard`, calls
the public virtime API, and returns a small JSON result stamped with provenance.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import Context
from pydantic import Field

from virtime.agent.results import SlideInfoResult, SlideListResult, TranslateResult, ViewResult
from virtime.agent.state import AgentState, session_key
from virtime.agent.tool_errors import tool_errors

__all__ = ["register_slide_tools", "slide_summary"]

_LISTED_MAX = 500  # slides described by one list_slides call
_MPP_DOC = "level-0 um/px, for a slide whose metadata lacks it"
_LOCK_WAIT_S = 120.0  # how long translate waits for another run holding the slide folder

#: Facts of a finished slide's summary.json worth an agent's context (the rest is on disk).
_SUMMARY_KEYS = ("status", "slide", "slide_id", "slide_mpp", "output_mpp", "tiles_total",
                 "tiles_done", "tiles_failed", "tissue_fraction", "seconds", "backend",
                 "precision", "model_hash", "virtime_version")


def slide_summary(folder: Path) -> dict[str, Any]:
    """The compact summary of a finished slide folder (see ``_SUMMARY_KEYS``)."""
    from virtime.io import SlideFolder

    record = SlideFolder(folder).require_done()
    return {k: record[k] for k in _SUMMARY_KEYS if k in record}


def _slide_entry(path: Path, out: Path) -> dict[str, Any]:
    from virtime.errors import VirtimeError
    from virtime.io import SlideFolder
    from virtime.slide import Slide
    from virtime.slide_ids import slide_id_from_path

    entry: dict[str, Any] = {"path": str(path), "size_bytes": path.stat().st_size}
    try:
        entry["slide_id"] = sid = slide_id_from_path(path)
        entry["translated"] = SlideFolder.of(out, sid).is_done()
        slide = Slide(path)
        entry.update(vendor=slide.vendor, width=slide.dimensions[0],
                     height=slide.dimensions[1], levels=slide.level_count,
                     mpp=slide.mpp if slide.has_mpp else None)
    except VirtimeError as exc:  # listed with its problem: the agent sees why it cannot be used
        entry["error"] = str(exc)
    return entry


def register_slide_tools(app: Any, state: AgentState) -> None:
    """Adds the slide tools to ``app`` (an ``MCPServer``)."""

    @app.tool()
    @tool_errors
    def list_slides(
        folder: Annotated[str, Field(description="a folder under an --allow root")],
        recursive: bool = False,
    ) -> SlideListResult:
        """Slide files in a folder, with size, dimensions, mpp and whether each is translated."""
        from virtime.slide_ids import SLIDE_EXTENSIONS

        root = state.guard.readable(folder, kind="folder")
        files = sorted(p for p in (root.rglob("*") if recursive else root.iterdir())
                       if p.is_file() and p.name.lower().endswith(SLIDE_EXTENSIONS))
        slides = []
        for p in files[:_LISTED_MAX]:
            try:
                real = state.guard.readable(p)  # a symlink inside the folder may point out
            except PermissionError:
                continue
            slides.append(_slide_entry(real, state.guard.out))
        body = {"folder": str(root), "count": len(files), "slides": slides}
        return state.result(body, settings={"recursive": recursive}, inputs=[])

    @app.tool()
    @tool_errors
    def slide_info(
        path: Annotated[str, Field(description="slide file under an --allow root")],
        mpp: Annotated[float | None, Field(gt=0, description=_MPP_DOC)] = None,
        target_mpp: Annotated[float, Field(gt=0, description="the model's input um/px")] = 0.25,
        tile_size: Annotated[int, Field(ge=64, le=4096)] = 512,
        min_tissue: Annotated[float, Field(ge=0, le=1)] = 0.1,
    ) -> SlideInfoResult:
        """Pyramid levels, mpp, vendor, tissue fraction and tile count of one slide."""
        from virtime.slide_info import describe_slide
        from virtime.tiling import TilingConfig

        slide = state.guard.readable(path)
        settings = {"mpp": mpp, "target_mpp": target_mpp, "tile_size": tile_size,
                    "min_tissue": min_tissue}
        tiling = TilingConfig(target_mpp=target_mpp, tile_size=tile_size, min_tissue=min_tissue)
        info = describe_slide(slide, mpp=mpp, tiling=tiling)
        return state.result(info, settings=settings, inputs=[slide])

    @app.tool()
    @tool_errors
    async def translate(
        ctx: Context,
        slide: Annotated[str, Field(description="slide file under an --allow root")],
        tile_size: Annotated[int | None, Field(ge=64, le=4096)] = None,
        overlap: Annotated[int | None, Field(ge=0)] = None,
        min_tissue: Annotated[float | None, Field(ge=0, le=1)] = None,
        output_mpp: Annotated[float | None, Field(gt=0)] = None,
        normalize: Literal["none", "macenko", "reinhard"] | None = None,
        mpp: Annotated[float | None, Field(gt=0)] = None,
        features: bool = True,
        force: bool = False,
    ) -> TranslateResult:
        """Virtual mIF of one slide into OUT/<slide_id> (long: reports progress, can be
        cancelled; a cancelled or interrupted slide resumes when called again with the same
        settings). Returns the output folder and the summary. Virtual mIF is a model
        prediction, not a measurement."""
        import anyio

        from virtime.agent.translate_job import run_translation
        from virtime.io import SlideFolder
        from virtime.slide_ids import slide_id_from_path

        path = state.guard.readable(slide)
        out = state.guard.out
        target = state.guard.writable(SlideFolder.of(out, slide_id_from_path(path)).path)
        asked = {"tile_size": tile_size, "overlap": overlap, "min_tissue": min_tissue,
                 "output_mpp": output_mpp, "normalize": normalize, "mpp": mpp}
        config = {**state.config.translate_defaults,
                  **{k: v for k, v in asked.items() if v is not None},
                  "features": features, "force": force,
                  # A call that resumes a cancelled one waits for its worker to let go.
                  "lock_timeout": _LOCK_WAIT_S}
        left = state.charge_slide(session_key(ctx.headers), path)
        partial = target.is_dir() and not SlideFolder(target).is_done()

        async def progress(done: int, total: int) -> None:
            await ctx.report_progress(done, total, f"{path.name}: {done}/{total} tiles")

        run = await run_translation(path, state.guard.out, state.config.weights, config, progress)
        folder = Path(run["output_dir"])
        body = {"output_folder": str(folder), "slide_id": run["slide_id"],
                "skipped_already_done": run["skipped"], "resumed": partial,
                "summary": await anyio.to_thread.run_sync(slide_summary, folder),
                "slides_left_in_budget": left,
                "resources": [f"virtime://slides/{run['slide_id']}/{k}"
                              for k in ("summary", "thumbnail", "features")],
                "note": "virtual mIF is a model prediction from H&E, not a measured stain"}
        return state.result(body, settings=config, inputs=[path])

    @app.tool()
    @tool_errors
    def view_url(
        slide_folder: Annotated[str, Field(description="a translated slide's folder OUT/<id>")],
    ) -> ViewResult:
        """URL of the local viewer (127.0.0.1, random token) for a translated slide; starts it
        once and reuses it."""
        from virtime.view import ViewServer, ViewSource

        folder = state.guard.readable(slide_folder, kind="folder")
        viewer = state.viewers.get(folder)
        if viewer is None:
            he = state.guard.readable(slide_summary(folder)["slide"])
            viewer = ViewServer(ViewSource(folder, slide_path=str(he))).start()
            state.viewers[folder] = viewer
        return state.result({"url": viewer.url, "slide_folder": str(folder)}, settings={},
                            inputs=[folder])
