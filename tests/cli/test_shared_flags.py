"""Each flag that several subcommands share is defined once, in cli/_common.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import virtime.cli
from virtime.cli import main

CLI = Path(virtime.cli.__file__).parent
SHARED = ["--tile-size", "--overlap", "--min-tissue", "--backend", "--precision", "--threads",
          "--allow-slow", "--mpp", "--allow-mpp", "--bin-um", "--threshold", "--max-failed-share",
          "--val-fraction", "--batch-size", "--levels", "--min-patients"]


@pytest.mark.parametrize("flag", SHARED)
def test_shared_flag_defined_once(flag: str) -> None:
    pattern = re.compile(r'add_argument\(\s*"' + re.escape(flag) + '"')
    where = [p.name for p in sorted(CLI.glob("*.py")) if pattern.search(p.read_text())]
    # Same name, another meaning: a simulated slide's mpp, torch CPU threads for training.
    other = {"--mpp": {"simulate_pairs.py", "features.py"}, "--threads": {"train.py"}}
    allowed = {"_common.py"} | other.get(flag, set())
    assert set(where) <= allowed and "_common.py" in where, where


def test_defaults_unchanged() -> None:
    import argparse

    from virtime.cli import translate as tr

    p = argparse.ArgumentParser()
    tr.add_model_args(p)
    tr.add_translation_args(p)
    args = p.parse_args([])
    assert (args.tile_size, args.overlap, args.min_tissue, args.threads) == (512, 0, 0.1, 0)
    assert (args.backend, args.precision, args.device, args.batch_size) == ("auto", "fp32", None, 8)
    config = tr.translate_config_from_args(args)
    from virtime.translation import TranslateConfig

    assert config == TranslateConfig()


def test_help_of_each_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    for sub in ("translate", "embed", "tiles", "info", "demo"):
        with pytest.raises(SystemExit) as exc:
            main([sub, "--help"])
        assert exc.value.code == 0
    assert "--tile-size" in capsys.readouterr().out
