"""The MCP server's settings: one frozen dataclass, made once by ``virtime mcp`` and passed down."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["AgentConfig"]


@dataclass(frozen=True)
class AgentConfig:
    """What an agent connected to ``virtime mcp`` may do.

    Parameters
    ----------
    allow
        Folders whose files the tools may read (slides, tables). Nothing outside them (or ``out``)
        is ever opened.
    out
        The one folder tools write into; it is readable too (translations, tables, reports).
    weights
        Translator weights used by ``translate`` (None: the bundled demo model).
    max_slides
        Slides one MCP session may translate (a resumed or repeated slide counts once).
    max_rows
        Rows of a table returned inline (top-k); the full table is written under ``out``.
    max_result_bytes
        Largest JSON result a tool returns; tables are cut to fit and marked truncated.
    max_image_px
        Longer side of an image resource (thumbnails and channel previews are downsized).
    translate_defaults
        Flat :class:`virtime.translation.TranslateConfig` keywords every ``translate`` call starts
        from (the tool's own arguments override them), e.g. ``{"backend": "torch"}``.
    """

    allow: tuple[Path, ...]
    out: Path
    weights: Path | None = None
    max_slides: int = 20
    max_rows: int = 20
    max_result_bytes: int = 200_000
    max_image_px: int = 1024
    translate_defaults: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from virtime.errors import InvalidArgumentError

        if not self.allow:
            raise InvalidArgumentError("give at least one --allow folder the server may read")
        for name in ("max_slides", "max_rows", "max_result_bytes", "max_image_px"):
            if int(getattr(self, name)) < 1:
                raise InvalidArgumentError(f"{name} must be at least 1, not {getattr(self, name)}")
