"""Command-line entry point: ``virtime <command> ...``.

Each subcommand lives in its own module under ``virtime.cli`` and exposes ``register(subparsers)``;
modules keep heavy imports inside their handlers so ``virtime --help`` stays instant. Errors that
virtime raises on purpose, and OS errors (a read-only folder, a full disk, a port in use), become
one line on stderr and exit code 2; warnings are one line each (:mod:`virtime.cli._console`);
Ctrl-C and SIGTERM stop a run the same way (exit 130 or 143). Usage errors exit 2 with the
usage of the command that was typed.
"""

from __future__ import annotations

import argparse
import importlib
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


class _Parser(argparse.ArgumentParser):
    """No abbreviated flags (``--weight`` is not ``--weights``: a typo must not pass silently);
    subcommand parsers are of this class too (argparse makes them of the parent's class)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (every registered subcommand)."""
    parser = _Parser(
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
    _describe_from_help(parser)
    return parser


def _describe_from_help(parser: argparse.ArgumentParser) -> None:
    """A subcommand registered with ``help=`` only gets it as its ``--help`` description too."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                if sub.description is None and helps.get(name):
                    text = str(helps[name])
                    sub.description = text[:1].upper() + text[1:] + "."
                _describe_from_help(sub)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the CLI; returns the process exit code (tests call this directly)."""
    from virtime.cli._console import (
        configure_logging,
        console_session,
        error_line,
        exit_code_for_interrupt,
    )

    parser = build_parser()
    args = _parse_args(parser, argv)
    configure_logging(args.verbose)
    if not getattr(args, "handler", None):
        parser.print_help(sys.stderr)
        return 2  # as argparse's own usage errors
    with console_session(args.command, args.verbose):
        try:
            return int(args.handler(args) or 0)
        except (VirtimeError, OSError) as exc:  # OSError: read-only, full disk, port in use
            print(f"virtime {args.command}: error: {error_line(exc)}", file=sys.stderr)
            return 2
        except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (console_session)
            code = exit_code_for_interrupt(exc)
            how = "" if code == 130 else f" ({exc})"
            print(f"virtime {args.command}: interrupted{how}", file=sys.stderr)
            return code


def _parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """``parser.parse_args``, except that an unknown flag is reported with the usage of the
    (sub)command it was given to, not the top-level usage."""
    args, extras = parser.parse_known_args(argv)
    if extras:
        _chosen_parser(parser, args).error(f"unrecognized arguments: {' '.join(extras)}")
    return args


def _chosen_parser(parser: argparse.ArgumentParser,
                   args: argparse.Namespace) -> argparse.ArgumentParser:
    """The innermost subcommand parser that ``args`` went through."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            chosen = getattr(args, action.dest, None)
            if chosen in action.choices:
                return _chosen_parser(action.choices[chosen], args)
    return parser


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
