"""``virtime view OUT/SLIDE_ID`` (or ``virtime view SLIDE.svs -o OUT``): the local slide viewer."""

from __future__ import annotations

import argparse

from virtime.cli._common import add_mpp_arg

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "view", help="pan and zoom a translated slide: H&E with virtual mIF overlays",
        description="Starts a viewer on 127.0.0.1 (a free port, a random token in the URL) and "
                    "opens it in the browser. Ctrl-C stops it.")
    p.add_argument("path", help="a slide's output folder OUT/SLIDE_ID, or the slide file with -o")
    p.add_argument("-o", "--output", help="output root the slide was translated into")
    p.add_argument("--slide", help="the H&E slide, if it moved since translation")
    p.add_argument("--port", type=_port, default=0, help="port, 1-65535 (default: a free one)")
    p.add_argument("--no-browser", action="store_true", help="print the URL, open nothing")
    add_mpp_arg(p)
    p.set_defaults(handler=_run)


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is out of range (1-65535, 0: a free one)")
    return port


def _run(args: argparse.Namespace) -> int:
    import sys

    from virtime.view import view

    server = view(args.path, output=args.output, slide=args.slide, mpp=args.mpp, port=args.port,
                  open_browser=not args.no_browser)
    print(f"virtime view: {server.source.slide_id} at {server.url}  (Ctrl-C stops)", flush=True)
    try:
        server.wait()
    except KeyboardInterrupt:
        print("virtime view: stopped", file=sys.stderr)
    finally:
        server.close()
    return 0
