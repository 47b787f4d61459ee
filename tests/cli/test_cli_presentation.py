"""What the command line shows: warnings as one line each, once; inputs checked before the demo
model's warning; help for every flag; usage errors of the command that was typed."""

from __future__ import annotations

import argparse
import re
import logging
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from virtime.channels import PROTEIN_CHANNELS
from virtime.cli import build_parser, main


@pytest.fixture
def cohort(tmp_path) -> list[str]:
    """``--features --clinical`` where the clinical column MSI has one class (1) only."""
    rng = np.random.default_rng(7)
    n = 40
    ids = [f"P{i}" for i in range(n)]
    feats = pd.DataFrame({f"{c}.density": rng.normal(size=n) for c in PROTEIN_CHANNELS})
    feats.insert(0, "patient_id", ids)
    feats.to_parquet(tmp_path / "f.parquet")
    pd.DataFrame({"patient_id": ids, "cancer_type": "LUNG", "subtype": "LUAD",
                  "KRAS": rng.integers(0, 2, n), "MSI": np.int64(1)}).to_csv(
        tmp_path / "c.csv", index=False)
    return ["--features", str(tmp_path / "f.parquet"), "--clinical", str(tmp_path / "c.csv")]


# ------------------------------------------------------------------ 12: warnings, one line each
def test_cli_warning_is_one_line_once_without_numpy_reprs(cohort, capsys):
    assert main(["validate", *cohort]) == 0
    err = capsys.readouterr().err.splitlines()
    csv = cohort[3]
    assert err == [f"virtime validate: warning: {csv}: biomarker column 'MSI' has fewer than "
                   f"two classes (1); it is not analysed"]


def test_library_warnings_have_virtime_categories(cohort):
    from virtime.errors import NoTissueWarning, StatisticalWarning, VirtimeWarning
    from virtime.stats import load_clinical

    assert issubclass(StatisticalWarning, VirtimeWarning) and issubclass(VirtimeWarning,
                                                                         UserWarning)
    assert issubclass(NoTissueWarning, VirtimeWarning) and issubclass(NoTissueWarning,
                                                                      RuntimeWarning)
    with pytest.warns(StatisticalWarning, match=r"'MSI' has fewer than two classes \(1\)"):
        load_clinical(cohort[3])


def test_cli_warnings_are_restored_after_the_command(cohort, capsys):
    from virtime.errors import StatisticalWarning
    before = (warnings.showwarning, list(warnings.filters))
    main(["validate", *cohort])
    assert (warnings.showwarning, list(warnings.filters)) == before
    with pytest.warns(StatisticalWarning):  # the library warns normally again
        from virtime.stats import load_clinical

        load_clinical(cohort[3])


def test_a_log_warning_checked_twice_is_shown_once(tmp_path):
    """``info`` checks the tiling twice; its upsampling warning used to be printed twice."""
    from virtime.simulate.slides import make_slide

    slide = make_slide(tmp_path / "coarse.svs", 512, 512, mpp=2.0, seed=3)
    proc = subprocess.run([sys.executable, "-m", "virtime.cli", "info", str(slide)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if "upsampled" in ln]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr


# ---------------------------------------------------- 13: inputs first, then the demo warning
@pytest.mark.parametrize("bad", [
    ["{tmp}/missing.svs", "-o", "{tmp}/out"],
    ["{slide}", "-o", "{tmp}/out", "--overlap", "-5"],
    ["{slide}", "{slide}", "-o", "{tmp}/out"],
    ["{slide}", "-o", "{tmp}/out", "--tile-size", "3"],  # smaller than the model's window
], ids=["missing-slide", "bad-overlap", "same-slide-twice", "tile-below-window"])
def test_bad_input_is_reported_before_the_demo_model_warning(bad, small_slide, tmp_path, capsys,
                                                              caplog):
    argv = ["translate", *(a.format(tmp=tmp_path, slide=small_slide) for a in bad)]
    with caplog.at_level(logging.WARNING):
        rc = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("virtime translate: error: "), err
    assert not [r for r in caplog.records if "demo model" in r.getMessage()]
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------- 14: help and flags
def _parsers(parser: argparse.ArgumentParser, name: str = "virtime"):
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _parsers(sub, f"{name} {sub_name}")


def test_every_flag_has_help_and_every_command_a_description():
    missing = []
    for name, parser in _parsers(build_parser()):
        if not parser.description:
            missing.append(f"{name}: no description")
        if parser.allow_abbrev:
            missing.append(f"{name}: abbreviations allowed")
        for action in parser._actions:
            if not isinstance(action, argparse._SubParsersAction) and not action.help:
                missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}")
    assert missing == []


@pytest.mark.parametrize(("command", "flag"), [
    ("translate", "--backend"), ("translate", "--precision"), ("translate", "--normalize"),
    ("associate", "--levels"), ("associate", "--correction"), ("associate", "--stage-test"),
    ("associate", "--alpha"), ("associate", "--plot-level"), ("survival", "--split"),
    ("survival", "--min-events"), ("survival", "--seed"), ("report", "--no-survival"),
    ("report", "--title"),
])
def test_help_names_the_default(command, flag):
    parser = dict(_parsers(build_parser()))[f"virtime {command}"]
    action = next(a for a in parser._actions if flag in a.option_strings)
    text = action.help % {"default": action.default}
    shown = " ".join(action.default) if isinstance(action.default, list) else action.default
    if isinstance(action.default, bool):
        assert "default: " in text, text  # a switch says what happens without it
    else:
        value = re.escape(str(shown))
        assert re.search(rf"\(default: {value}[),]|\({value}\)", text), text


def test_translate_help_has_a_description(capsys):
    with pytest.raises(SystemExit):
        main(["translate", "--help"])
    out = capsys.readouterr().out
    assert "Translate each H&E slide into virtual multiplex immunofluorescence" in out


@pytest.mark.parametrize(("argv", "usage", "bad"), [
    (["translate", "s.svs", "-o", "out", "--wieghts", "w.pth"], "usage: virtime translate",
     "--wieghts"),
    (["translate", "s.svs", "-o", "out", "--weight", "w.pth"], "usage: virtime translate",
     "--weight"),  # an abbreviation is a typo too
    (["translate", "s.svs", "-o", "out", "--no-feat"], "usage: virtime translate", "--no-feat"),
    (["cohort", "status", "out", "--failled", "3"], "usage: virtime cohort status", "--failled"),
])
def test_a_typo_shows_the_usage_of_the_command_typed(argv, usage, bad, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.startswith(usage), err
    assert f"unrecognized arguments: {bad}" in err


@pytest.mark.parametrize("argv", [[], ["cells"], ["cohort"]])
def test_no_command_exits_2(argv, capsys):
    try:
        rc = main(argv)
    except SystemExit as exc:
        rc = exc.code
    assert rc == 2
    assert "usage: virtime" in capsys.readouterr().err


def test_cells_export_takes_the_slide_folder_as_its_argument():
    args = build_parser().parse_args(["cells", "export", "OUT/s1", "-o", "c.h5ad"])
    assert args.slide_dir == "OUT/s1" and args.output == "c.h5ad"
    old = build_parser().parse_args(["cells", "export", "--anndata", "OUT/s1", "-o", "c.h5ad"])
    assert old.slide_dir == "OUT/s1" and old.anndata is True


def test_log_json_records_how_the_run_ended(small_slide, tiny_weights, tmp_path, capsys):
    import json

    log = tmp_path / "events.jsonl"
    common = ["-o", str(tmp_path / "out"), "--weights", str(tiny_weights), "-q", "--backend",
              "onnxruntime", "--tile-size", "128", "--threads", "1", "--no-features",
              "--log-json", str(log)]
    assert main(["translate", str(small_slide), *common]) == 0
    events = [json.loads(line) for line in log.read_text().splitlines()]
    done = [e for e in events if e["event"] == "slide_done"]
    assert len(done) == 1 and done[0]["slide_id"] == Path(small_slide).stem
    assert done[0]["tiles_done"] == [e for e in events if e["event"] == "start"][0]["tiles"]
    assert events[-1]["event"] == "run_done" and events[-1]["failed"] == 0
    log.unlink()
    assert main(["translate", str(small_slide), *common, "--weights",
                 str(tmp_path / "nowhere.pth")]) == 2
    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert [e["event"] for e in events] == ["run_failed"]
    assert "nowhere.pth: weights file not found" in events[0]["error"]
    capsys.readouterr()


def test_translate_warning_from_the_finishing_thread_is_one_line(tiny_weights, tmp_path, capsys):
    """Blank glass: the slide features are NaN, with a warning raised on the thread that writes
    the slide's outputs; the CLI shows it as one line, once."""
    from virtime.simulate.slides import write_slide

    glass = write_slide(tmp_path / "glass.svs", np.full((512, 512, 3), 244, np.uint8), 0.5)
    assert main(["translate", str(glass), "-o", str(tmp_path / "out"), "--weights",
                 str(tiny_weights), "-q", "--backend", "onnxruntime", "--tile-size", "128"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err == ["virtime translate: warning: features: no tissue pixels; every feature is NaN"]
