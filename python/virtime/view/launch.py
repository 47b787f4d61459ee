"""``virtime.view(...)``: open a translated slide in the local viewer from Python.

``virtime view`` is this function behind a command line: it finds the slide folder (given
directly, or as the slide file plus the output root), opens it as a :class:`ViewSource`, serves
it on ``127.0.0.1`` with a random token in the URL, and opens the browser. From a notebook the
server runs on a background thread and is returned, so the cell finishes and ``server.close()``
stops it.
"""

from __future__ import annotations

import os
from pathlib import Path

from virtime.errors import InvalidArgumentError
from virtime.view.server import ViewServer
from virtime.view.tiles import ViewSource

__all__ = ["resolve_slide_dir", "view"]


def resolve_slide_dir(path: str | os.PathLike[str],
                      output: str | os.PathLike[str] | None = None) -> Path:
    """The slide folder for ``path``: itself, or ``output/<slide id>`` for a slide file."""
    p = Path(path)
    if p.is_file():
        if not output:
            raise InvalidArgumentError(f"{p} is a slide file: give the output root with -o OUT")
        from virtime.slide_ids import slide_id_from_path

        return Path(output) / slide_id_from_path(p)
    return p


def view(
    path: str | os.PathLike[str],
    *,
    output: str | os.PathLike[str] | None = None,
    slide: str | os.PathLike[str] | None = None,
    mpp: float | None = None,
    port: int = 0,
    open_browser: bool = True,
) -> ViewServer:
    """Serves a translated slide to the browser: H&E with the virtual mIF channels as overlays.

    Parameters
    ----------
    path
        A slide's output folder ``OUT/<slide_id>``, or the slide file with ``output``.
    output
        The output root the slide was translated into (when ``path`` is the slide file).
    slide
        The H&E slide, if it moved since the translation.
    mpp
        Level-0 microns per pixel, for a slide whose metadata lacks it.
    port
        0 (default): a free port.
    open_browser
        Open :attr:`ViewServer.url` in the default browser.

    Returns
    -------
    ViewServer
        Already serving on a background thread; ``server.url`` is the page, ``server.close()``
        stops it (``with virtime.view(...) as server:`` closes it after the block).

    Raises :class:`~virtime.errors.InputDataError` when the folder is not a finished translation
    and :class:`~virtime.errors.InvalidArgumentError` when the port cannot be taken.
    """
    source = ViewSource(resolve_slide_dir(path, output), slide_path=slide, mpp=mpp)
    try:
        server = ViewServer(source, port=port)
    except OSError as exc:  # in use, or not ours to take
        raise InvalidArgumentError(f"port {port}: {exc.strerror or exc}; choose another "
                                   f"--port, or leave it out for a free one") from exc
    server.start()
    if open_browser:
        import webbrowser

        webbrowser.open(server.url)
    return server
