"""``virtime mcp --allow SLIDES --output OUT``: the MCP server for AI agents (stdio, or --http)."""

from __future__ import annotations

import argparse

from virtime.cli._common import add_backend_arg, add_batch_size_arg, add_threads_arg

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "mcp", help="MCP server: virtime's tools for AI agents, with guardrails",
        description="Serves virtime's tools (list_slides, slide_info, translate, slide_features, "
                    "merge_features, associate, survival, report, view_url), resources and a "
                    "'study a cohort' prompt over the Model Context Protocol: stdio by default, "
                    "streamable HTTP on 127.0.0.1 with a random token with --http. Reads only "
                    "under --allow and --output, writes only under --output, downloads nothing. "
                    "Needs the mcp package (pip install 'virtime[mcp]').")
    p.add_argument("--allow", action="append", required=True, metavar="DIR",
                   help="a folder the tools may read (repeatable); relative paths start here")
    p.add_argument("-o", "--output", required=True, metavar="DIR",
                   help="the only folder the tools write into (created if missing)")
    p.add_argument("--weights", default=None,
                   help="translator weights for translate (default: the bundled demo model)")
    g = p.add_argument_group("translate's engine")
    add_backend_arg(g)
    add_threads_arg(g)
    add_batch_size_arg(g, 8)
    p.add_argument("--max-slides", type=int, default=20,
                   help="slides one MCP session may translate (20)")
    p.add_argument("--max-rows", type=int, default=20,
                   help="table rows returned inline; the full table is a file (20)")
    p.add_argument("--max-result-bytes", type=int, default=200_000,
                   help="largest JSON result; tables are cut to fit (200000)")
    p.add_argument("--http", action="store_true",
                   help="streamable HTTP on 127.0.0.1 instead of stdio (token printed on stderr)")
    p.add_argument("--port", type=int, default=0, help="HTTP port (default: a free one)")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from virtime.agent import AgentConfig
    from virtime.errors import CheckpointError, InvalidArgumentError

    import importlib.util

    if importlib.util.find_spec("mcp") is None:  # the optional dependency, checked up front
        raise InvalidArgumentError("virtime mcp needs the MCP SDK: pip install 'virtime[mcp]'")
    for folder in args.allow:
        if not Path(folder).is_dir():
            raise InvalidArgumentError(f"--allow {folder}: no such folder")
    weights = Path(args.weights).resolve() if args.weights else None
    if weights is not None and not weights.is_file():
        raise CheckpointError(f"{args.weights}: weights file not found")
    defaults = {"backend": args.backend, "threads": args.threads, "batch_size": args.batch_size}
    config = AgentConfig(allow=tuple(Path(a) for a in args.allow), out=Path(args.output),
                         weights=weights, max_slides=args.max_slides, max_rows=args.max_rows,
                         max_result_bytes=args.max_result_bytes, translate_defaults=defaults)
    if args.http:
        from virtime.agent.http_transport import serve_http

        serve_http(config, port=args.port)
    else:
        from virtime.agent.server import serve_stdio

        serve_stdio(config)
    return 0
