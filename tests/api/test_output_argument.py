"""One name for where an entry point writes: the keyword ``output`` in Python, ``-o/--output`` on
the command line; and one argument order ``(what, model, output, config)``."""

from __future__ import annotations

import argparse
import importlib
import inspect

import pytest

from virtime.cli import build_parser
from virtime.errors import InvalidArgumentError

#: (module, function) of every public function that writes files.
WRITERS = [
    ("virtime.translation", "translate"),
    ("virtime.translation", "translate_slides"),
    ("virtime.cohort", "run_cohort"),
    ("virtime.demo", "run_demo"),
    ("virtime.embed", "embed_slide"),
    ("virtime.tile_export", "export_tiles"),
    ("virtime.quantize.ptq", "quantize_translator"),
    ("virtime.cells.export", "export_anndata"),
    ("virtime.features", "merge_features"),
    ("virtime.report", "write_report"),
    ("virtime.evaluation.evaluate", "write_report"),
    ("virtime.simulate.cohort_render", "simulate_cohort"),
]
OTHER_NAMES = {"out", "out_dir", "output_dir", "output_root", "output_path", "dest"}


@pytest.mark.parametrize(("module", "name"), WRITERS)
def test_python_writers_take_output(module: str, name: str) -> None:
    params = inspect.signature(getattr(importlib.import_module(module), name)).parameters
    assert "output" in params
    assert not OTHER_NAMES & set(params)


@pytest.mark.parametrize(("module", "name"), [("virtime.translation", "translate"),
                                              ("virtime.translation", "translate_slides"),
                                              ("virtime.cohort", "run_cohort")])
def test_what_model_output_config(module: str, name: str) -> None:
    params = list(inspect.signature(getattr(importlib.import_module(module), name)).parameters)
    assert params[1:4] == ["model", "output", "config"]


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    found: dict[str, argparse.ArgumentParser] = {}

    def walk(parser: argparse.ArgumentParser, prefix: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    found[f"{prefix}{name}"] = sub
                    walk(sub, f"{prefix}{name} ")

    walk(build_parser(), "")
    return found


def test_cli_output_is_dash_o() -> None:
    commands = _subcommands()
    with_output = []
    for name, parser in commands.items():
        for action in parser._actions:
            flags = set(action.option_strings)
            assert not flags & {"--out", "--out-dir", "--output-dir", "--output-root"}, name
            if action.dest == "output" and flags:
                assert flags == {"-o", "--output"}, name
                with_output.append(name)
    assert {"translate", "mcp", "cohort run", "view", "report"} <= set(with_output)


def test_run_demo_names_a_path_given_as_the_model(tmp_path) -> None:
    from virtime.demo import run_demo

    with pytest.raises(InvalidArgumentError, match="not a path"):
        run_demo(str(tmp_path / "x.pth"), tmp_path / "out")
    assert not (tmp_path / "out").exists()
