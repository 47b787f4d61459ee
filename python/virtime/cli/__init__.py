"""Command-line entry point: ``virtime <command> ...``.

Each subcommand lives in its own module under ``virtime.cli`` and exposes ``register(subparsers)``;
modules keep heavy imports inside their handlers so ``virtime --help`` stays instant. Errors that
virtime raises on purpose become one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from virtime import __version__
from virtime.errors import VirtimeError

__all__ = ["main", "build_parser"]

# Subcommand name -> module; add one line per new command.
_COMMAND_MODULES: tuple[str, ...] = (
    "virtime.cli.simulate_pairs",
    "virtime.cli.train",
    "virtime.cli.evaluate",
    "virtime.cli.export",
    "virtime.cli.info",
    "virtime.cli.tiles",
    "virtime.cli.translate",
    "virtime.cli.quantize",
    "virtime.cli.bench",
    "virtime.cli.features",
    "virtime.cli.cohort",
    "virtime.cli.validate",
    "virtime.cli.associate",
    "virtime.cli.survival",
    "virtime.cli.report",
    "virtime.cli.embed",
    "virtime.cli.probe",
    "virtime.cli.demo",
    "virtime.cli.cells",
    "virtime.cli.view",
    "virtime.cli.audit",
    "virtime.cli.mcp",
)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (every registered subcommand)."""
    parser = argparse.ArgumentParser(
        prog="virtime",
        description="Virtual multiplex immunofluorescence from H&E whole-slide images.",
    )
    parser.add_argument("--version", action="version", version=f"virtime {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:  # a command whose module is not there yet
            if exc.name == module_name:
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the CLI; returns the process exit code (tests call this directly)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "handler", None):
        parser.print_help()
        return 1
    try:
        return int(args.handler(args) or 0)
    except VirtimeError as exc:
        print(f"virtime {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"virtime {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
