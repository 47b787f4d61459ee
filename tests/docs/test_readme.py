"""Every code block of README.md and docs/*.md runs, on tiny inputs (a doctest for the docs).

Each ```bash / ```sh / ```python block is one test, named ``FILE:LINE``. Blocks run in a sandbox
folder that holds the placeholder files the README names (``SLIDE.svs``, ``slide.tif``,
``SLIDES/*.svs``, ``model.pth``, ``flash/model.pth``, ``clinical.csv``, ``manifest.csv`` …), made
here from ``virtime.simulate`` and small random models.

* Shell blocks: each line is shlex-split (``#`` tails dropped, ``\\`` continuations joined, ``&&``
  splits commands, globs expanded in the sandbox); a ``virtime …`` command runs in-process through
  ``virtime.cli.main(argv)`` and must return 0, after the explicit substitutions of
  ``_substitute`` (tiny demo, no browser, short benchmark …); ``pip install`` and ``python -m
  pytest`` are skipped (already installed / this run), ``cp`` copies inside the sandbox; any other
  program is an error, so a new kind of command has to be added here on purpose.
* ``<!-- readme-test: synopsis -->`` right before a block: its ``virtime`` lines are only checked
  against the subcommand's parser (every ``--flag`` exists, every ``a|b|c`` value list is among the
  flag's choices).
* Python blocks run as a user runs them: each is written to a script and run in a fresh
  interpreter (a subprocess, in the sandbox folder), after the substitutions of
  ``PYTHON_SUBSTITUTIONS`` (the tiny demo); nothing is predefined, so a block that uses a name it
  does not define fails. Each is also fed line by line to an interactive console (without running
  it), so it can be pasted into ``python`` as it stands (a statement right after an indented
  block needs a blank line there).
* ``<!-- readme-test: skip REASON -->`` skips a block that cannot run here (official weights, GPU,
  a package virtime does not depend on).
"""

from __future__ import annotations

import argparse
import code
import glob
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LANGS = {"bash": "shell", "sh": "shell", "shell": "shell", "python": "python"}
MARKER = re.compile(r"<!--\s*readme-test:\s*(synopsis|skip)\b\s*(.*?)\s*-->")

# Python blocks: heavy literal settings replaced by tiny ones (each must occur in some block);
# ``{name}`` fields are filled from the shared fixture state (absolute paths, as literals).
PYTHON_SUBSTITUTIONS: tuple[tuple[str, str], ...] = (
    ('run_demo(None, "demo_out", DemoConfig(patients=300, slide_px=512))',
     ('run_demo(__import__("virtime.models", fromlist=["load"]).load({tiny_demo_weights!r}), '
      "{demo_dir!r}, DemoConfig(patients=30, second_patients=0, slide_px=128, "
      "show_progress=False))")),
)
# Blocks whose run takes more than a few seconds (translations, the demo, training, Dask).
SLOW_HINTS = ("virtime demo", "run_demo(", "virtime translate", "virtime.translate(", "virtime train",
              "virtime cohort run", "virtime bench", "virtime simulate-pairs", "virtime survival",
              "survival_analysis(", "create_engine(")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    lang: str  # "shell" or "python"
    code: str
    mode: str  # "run", "synopsis" or "skip"
    reason: str = ""

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def extract_blocks(path: Path, text: str | None = None) -> list[Block]:
    """The fenced bash/sh/python blocks of a Markdown file, with their readme-test marker."""
    lines = (path.read_text(encoding="utf-8") if text is None else text).splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = re.match(r"^(\s*)```(\w*)\s*$", lines[i])
        if not m:
            i += 1
            continue
        start, lang = i, m.group(2).lower()
        j = i + 1
        while j < len(lines) and not re.match(r"^\s*```\s*$", lines[j]):
            j += 1
        if lang in LANGS:
            mode, reason = "run", ""
            k = start - 1
            while k >= 0 and not lines[k].strip():
                k -= 1
            mk = MARKER.search(lines[k]) if k >= 0 else None
            if mk:
                mode, reason = mk.group(1), mk.group(2)
                if mode == "skip" and not reason:
                    raise AssertionError(f"{path}:{start + 1}: readme-test skip needs a reason")
            blocks.append(Block(path, start + 1, LANGS[lang], "\n".join(lines[start + 1:j]), mode,
                                reason))
        i = j + 1
    return blocks


ALL_BLOCKS = [b for p in DOC_FILES for b in extract_blocks(p)]


def _param(block: Block):
    marks = []
    if block.mode == "skip":
        marks.append(pytest.mark.skip(reason=block.reason))
    elif block.mode == "run" and any(h in block.code for h in SLOW_HINTS):
        marks.append(pytest.mark.slow)
    return pytest.param(block, id=block.id, marks=marks)


# ------------------------------------------------------------------------------------------------
# Shell commands


def shell_commands(code: str) -> list[list[str]]:
    """Commands of a shell block: continuations joined, comments dropped, split at ``&&``."""
    joined = re.sub(r"\\\n", " ", code)
    commands: list[list[str]] = []
    for line in joined.splitlines():
        tokens = shlex.split(line, comments=True)
        current: list[str] = []
        for tok in tokens:
            if tok == "&&":
                if current:
                    commands.append(current)
                current = []
            else:
                current.append(tok)
        if current:
            commands.append(current)
    return commands


def _expand_globs(tokens: list[str]) -> list[str]:
    out: list[str] = []
    for tok in tokens:
        if any(c in tok for c in "*?") and not tok.startswith("-"):
            hits = sorted(glob.glob(tok))
            assert hits, f"glob {tok!r} matches nothing in the sandbox"
            out.extend(hits)
        else:
            out.append(tok)
    return out


def _set_option(argv: list[str], names: tuple[str, ...], value: str | None) -> list[str]:
    """argv with option ``names`` removed (and its value), then ``names[0] value`` appended."""
    out, skip = [], False
    for tok in argv:
        if skip:
            skip = False
            continue
        if tok in names:
            skip = True
            continue
        if any(tok.startswith(n + "=") for n in names if n.startswith("--")):
            continue
        out.append(tok)
    return out + ([names[0], value] if value is not None else [])


def _substitute(argv: list[str], ctx: dict) -> list[str]:
    """The explicit table of heavy commands and what runs instead (tiny, offline, no browser)."""
    cmd = argv[0]
    if cmd == "demo":  # one shared tiny demo folder (30 patients, one cohort, 128-px slides)
        argv = _set_option(argv, ("-o", "--output"), str(ctx["demo_dir"]))
        for opt, val in (("--patients", "30"), ("--second-patients", "0"), ("--slide-px", "128"),
                         ("--weights", str(ctx["tiny_demo_weights"]))):
            argv = _set_option(argv, (opt,), val)
        return argv + ["-q"]
    if cmd == "view":
        return argv + ["--no-browser"]
    if cmd == "bench":
        argv = _set_option(argv, ("--size",), "512")
        argv = _set_option(argv, ("--repeats",), "1")
        return _set_option(argv, ("--reference-tiles",), "1")
    if cmd == "simulate-pairs":
        argv = _set_option(argv, ("--tiles",), "8")
        argv = _set_option(argv, ("--tiles-per-slide",), "4")  # two slides: a slide-level split
        return argv + ["-q"]
    if cmd == "train":
        for opt, val in (("--epochs", "1"), ("--steps-per-epoch", "2"), ("--batch-size", "2"),
                         ("--crop", "64")):
            argv = _set_option(argv, (opt,), val)
        return argv + ["-q"]
    if cmd == "evaluate":
        return argv + ["-q"]
    if argv[:2] == ["cohort", "run"]:
        return argv + ["--workers", "1", "--no-dashboard", "-q"]
    if cmd == "translate":
        return argv + ["-q"]
    return argv


def run_shell_block(code: str, sandbox: Path, ctx: dict) -> list[list[str]]:
    """Runs a shell block in ``sandbox``; returns the virtime argvs it ran."""
    from virtime.cli import main

    ran = []
    for tokens in shell_commands(code):
        prog, args = tokens[0], _expand_globs(tokens[1:])
        if prog == "pip":
            continue  # the package is installed (editable) already
        if prog == "python" and args[:2] == ["-m", "pytest"]:
            continue  # that is this run
        if prog == "cp":
            assert len(args) == 2, tokens
            dst = (sandbox / args[1]).resolve()
            assert sandbox.resolve() in dst.parents, f"cp outside the sandbox: {tokens}"
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(args[0], dst)
            continue
        assert prog == "virtime", (f"README runs {prog!r}: add it to tests/docs/test_readme.py "
                                   "on purpose, or rewrite the line")
        argv = _substitute(args, ctx)
        if argv[0] == "demo" and argv in ctx.setdefault("demo_runs", []):
            from virtime.cli import build_parser

            build_parser().parse_args(argv)  # the same tiny demo ran already: flags checked only
            continue
        try:
            rc = main(argv)
        except SystemExit as exc:  # argparse: unknown flag, bad value
            raise AssertionError(f"virtime {' '.join(argv)}: argparse exit {exc.code}") from exc
        assert rc == 0, f"virtime {' '.join(argv)} returned {rc}"
        if argv[0] == "demo":
            ctx["demo_runs"].append(argv)
        ran.append(argv)
    return ran


def _subparser(parser: argparse.ArgumentParser, words: list[str]) -> tuple[argparse.ArgumentParser,
                                                                             list[str]]:
    """The (nested) subcommand parser that ``words`` name, and the words after it."""
    while words:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs or words[0] not in subs[0].choices:
            break
        parser, words = subs[0].choices[words[0]], words[1:]
    return parser, words


def check_synopsis(code: str) -> int:
    """Checks the flags a synopsis names against the parser; returns the number checked."""
    from virtime.cli import build_parser

    parser, checked = build_parser(), 0
    commands: list[list[str]] = []
    for tokens in shell_commands(code):  # a synopsis wraps without backslashes
        if tokens[0] != "virtime" and commands and tokens[0].startswith(("[", "-")):
            commands[-1] += tokens
        else:
            commands.append(tokens)
    for tokens in commands:
        assert tokens[0] == "virtime", tokens
        sub, rest = _subparser(parser, tokens[1:])
        assert sub is not parser, f"no such subcommand: {tokens[1]!r}"
        options = {s: a for a in sub._actions for s in a.option_strings}
        words = [t.strip("[]") for t in rest]
        for n, word in enumerate(words):
            if not word.startswith("-") or word in ("-", "..."):
                continue
            flag = word.split("=")[0]
            assert flag in options, f"virtime {tokens[1]}: no flag {flag!r}"
            checked += 1
            nxt = words[n + 1] if n + 1 < len(words) else ""
            if "|" in nxt and options[flag].choices is not None:
                bad = set(nxt.split("|")) - {str(c) for c in options[flag].choices}
                assert not bad, f"virtime {tokens[1]} {flag}: not among the choices: {sorted(bad)}"
    return checked


# ------------------------------------------------------------------------------------------------
# The sandbox


def _cohort_tables(n: int, seed: int, prefix: str):
    """A features table and a clinical table of ``n`` patients with a planted KRAS -> CD138 effect."""
    import pandas as pd

    from virtime.channels import CHANNEL_NAMES

    rng = np.random.default_rng(seed)
    types = np.repeat(["COAD", "LUAD"], n // 2)
    subtypes = np.where(np.arange(n) % 4 < 2, np.where(types == "COAD", "COAD", "LUAD"),
                        np.where(types == "COAD", "READ", "LUSC"))
    kras = rng.random(n) < 0.4
    cd8 = rng.lognormal(-5, 0.6, n)
    patients = [f"{prefix}{i:03d}" for i in range(n)]
    feats = {"slide_id": [p + "-S" for p in patients], "patient_id": patients}
    for ch in CHANNEL_NAMES:
        if ch in ("TRITC", "Cy5"):
            continue
        feats[f"{ch}.density"] = rng.lognormal(-4, 0.5, n)
        feats[f"{ch}.mean"] = rng.random(n) * 0.2
    feats["CD138.density"] = feats["CD138.density"] * np.where(kras, 3.0, 1.0)
    feats["CD8.density"] = cd8
    feats["CD8.tumour_density"] = cd8 * 1.5
    hazard = np.exp(-0.8 * (np.log(cd8) + 5) / 0.6)
    t = rng.exponential(60 / hazard)
    clinical = pd.DataFrame({
        "patient_id": patients, "cancer_type": types, "subtype": subtypes,
        "stage": rng.choice(["I", "II", "III", "IV"], n), "os_time": np.minimum(t, 120).round(1),
        "os_event": (t < 120).astype(int), "KRAS": kras.astype(int),
        "slide_id": feats["slide_id"]})
    return pd.DataFrame(feats), clinical


@pytest.fixture(scope="module")
def base_sandbox(tmp_path_factory):
    import pandas as pd
    import torch

    from virtime.models import GigaTIME, GigaTIMEFlash
    from virtime.simulate.slides import make_slide

    sb = tmp_path_factory.mktemp("readme_sandbox")
    make_slide(sb / "SLIDE.svs", 768, 768, mpp=0.25, seed=3)
    make_slide(sb / "slide.svs", 768, 768, mpp=0.25, seed=4)
    make_slide(sb / "slide.tif", 768, 768, mpp=0.25, fmt="generic-no-mpp", seed=5)
    (sb / "SLIDES").mkdir()
    for i, name in enumerate(("case1.svs", "case2.svs")):
        make_slide(sb / "SLIDES" / name, 512, 512, mpp=0.25, seed=6 + i)
    # Official-layout checkpoints (raw state dicts, 0.25 um/px, 256-px windows), tiny widths.
    torch.manual_seed(0)
    gt = GigaTIME(filters=(4, 8, 16, 32, 64)).eval()
    with torch.no_grad():
        gt.final.bias.copy_(torch.linspace(-2, 2, 23))
    torch.save(gt.state_dict(), sb / "model.pth")
    (sb / "gigatime").mkdir()
    shutil.copy(sb / "model.pth", sb / "gigatime" / "model.pth")
    (sb / "flash").mkdir()
    flash = GigaTIMEFlash(dim=64, depth=12, heads=1, mlp_hidden=64, decoder=(32, 16, 8, 8)).eval()
    torch.save(flash.state_dict(), sb / "flash" / "model.pth")
    # Tables: a 60-patient cohort (+ a validation cohort) and the clinical rows of the slides.
    feats, clin = _cohort_tables(60, 1, "P")
    vfeats, vclin = _cohort_tables(40, 2, "T")
    feats.to_parquet(sb / "cohort_features.parquet")
    vfeats.to_parquet(sb / "tcga_features.parquet")
    vclin.to_csv(sb / "tcga_clinical.csv", index=False)
    slides = pd.DataFrame({"patient_id": ["X1", "X2", "X3", "X4"], "cancer_type": "COAD",
                           "subtype": "COAD", "stage": ["I", "II", "III", "IV"],
                           "os_time": [10.0, 20.0, 30.0, 40.0], "os_event": [1, 0, 1, 0],
                           "KRAS": [1, 0, 1, 0], "slide_id": ["SLIDE", "slide", "case1", "case2"]})
    pd.concat([clin, slides]).to_csv(sb / "clinical.csv", index=False)
    (sb / "tiers.json").write_text(json.dumps({"CD8": "high", "CD20": "low"}))
    (sb / "manifest.csv").write_text("path,slide_id,patient_id\nSLIDE.svs,SLIDE,X1\n")
    return sb


@pytest.fixture(scope="module")
def shared(tmp_path_factory, tiny_weights):
    """State shared by blocks for speed only: the engine cache and the tiny demo's folder."""
    cache = tmp_path_factory.mktemp("readme_cache")
    return {"cache": cache, "demo_dir": tmp_path_factory.mktemp("readme_demo") / "demo",
            "tiny_demo_weights": tiny_weights}


@pytest.fixture
def sandbox(base_sandbox, shared, tmp_path, monkeypatch):
    sb = tmp_path / "sb"
    shutil.copytree(base_sandbox, sb)
    monkeypatch.chdir(sb)
    monkeypatch.setenv("VIRTIME_CACHE_DIR", str(shared["cache"]))
    return sb


@pytest.fixture
def quick_view(monkeypatch):
    """``virtime view`` serves one request (the page, token included) and returns."""
    from virtime.view import ViewServer

    def serve_once(self):
        thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        thread.start()
        try:
            with urllib.request.urlopen(self.url, timeout=30) as resp:
                assert resp.status == 200
        finally:
            self._httpd.shutdown()
            thread.join(timeout=30)

    def wait_once(self):  # the server already runs on its background thread (ViewServer.start)
        with urllib.request.urlopen(self.url, timeout=30) as resp:
            assert resp.status == 200

    monkeypatch.setattr(ViewServer, "serve_forever", serve_once)
    monkeypatch.setattr(ViewServer, "wait", wait_once)


class _PasteCheck(code.InteractiveConsole):
    """An interactive console that compiles what is pasted into it but runs nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.errors: list[str] = []

    def runcode(self, code_obj) -> None:  # only the statement splitting is checked
        pass

    def showsyntaxerror(self, filename=None, **kwargs) -> None:
        self.errors.append(self.buffer[-1] if self.buffer else "")


def check_pastes(code_text: str) -> None:
    """Feeds a block line by line to an interactive console, as a paste into ``python`` does."""
    console = _PasteCheck()
    for line in [*code_text.splitlines(), ""]:
        console.push(line)
    assert not console.errors, f"the block does not paste into python, at: {console.errors}"


def run_python_block(code_text: str, sandbox: Path, ctx: dict, timeout: float = 600) -> str:
    """Runs a block as a script in a fresh interpreter in ``sandbox``; returns its stdout."""
    for old, new in PYTHON_SUBSTITUTIONS:
        code_text = code_text.replace(old, new.format(
            tiny_demo_weights=str(ctx["tiny_demo_weights"]), demo_dir=str(ctx["demo_dir"])))
    script = sandbox / "readme_block.py"
    script.write_text(code_text + "\n", encoding="utf-8")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}  # a user sees warnings; not failures here
    proc = subprocess.run([sys.executable, script.name], cwd=sandbox, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, f"the block failed as a script:\n{proc.stderr[-4000:]}"
    return proc.stdout


# ------------------------------------------------------------------------------------------------
# The tests


@pytest.mark.parametrize("block", [_param(b) for b in ALL_BLOCKS])
def test_block(block: Block, sandbox, shared, quick_view):
    with warnings.catch_warnings():
        # A README user sees warnings (demo model, tiny cohorts); they are not failures here.
        warnings.simplefilter("ignore")
        if block.mode == "synopsis":
            assert check_synopsis(block.code) > 0
        elif block.lang == "shell":
            run_shell_block(block.code, sandbox, shared)
        else:
            check_pastes(block.code)
            run_python_block(block.code, sandbox, shared)


def test_blocks_found_and_skips_rare():
    langs = {b.lang for b in ALL_BLOCKS}
    assert langs == {"shell", "python"}
    skips = [b for b in ALL_BLOCKS if b.mode == "skip"]
    assert len(skips) <= 4, [b.id for b in skips]
    # The Python quick start runs (as a script, in a fresh process: see run_python_block).
    quick = readme_python_blocks_after("## Python quick start")
    assert quick and quick[0].mode == "run" and "virtime.translate(" in quick[0].code
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    # The two set-up commands, verbatim; .ci/run calls the second.
    assert "```bash\npip install . && virtime demo\n```" in readme
    assert "```bash\npip install \".[test]\" && python -m pytest\n```" in readme
    assert (ROOT / ".ci" / "run").read_text().rstrip().splitlines()[-1] == \
        'pip install ".[test]" && python -m pytest'


def test_setup_section_tells_a_newcomer_what_to_expect():
    """Set-up: exactly two commands, and around them what a newcomer trips on."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    setup = readme.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    assert len(extract_blocks(ROOT / "README.md", setup)) == 2
    prose = " ".join(setup.split())
    assert "virtual environment" in prose and "venv" in prose
    assert "CPU build of torch" in prose and "https://download.pytorch.org/whl/cpu" in prose
    assert re.search(r"about [\d.]+ GB on disk", prose)  # the demo's outputs
    assert re.search(r"minutes on a \d+-core x86_64 CPU", prose)  # the machine of the timing
    if "chromium" in (ROOT / ".ci" / "run").read_text():  # CI runs browser tests the command skips
        assert "without Chromium the browser tests" in prose


def readme_python_blocks_after(heading: str) -> list[Block]:
    """The README's Python blocks below ``heading`` (in order)."""
    readme = ROOT / "README.md"
    start = readme.read_text(encoding="utf-8").splitlines().index(heading) + 1
    return [b for b in ALL_BLOCKS if b.path == readme and b.lang == "python" and b.line > start]


def test_python_substitutions_still_match():
    code = "\n".join(b.code for b in ALL_BLOCKS if b.lang == "python")
    for old, _ in PYTHON_SUBSTITUTIONS:
        assert old in code, f"PYTHON_SUBSTITUTIONS entry no longer in the docs: {old}"


def test_cli_table_matches_the_parser():
    """The README's command table names every subcommand, and only flags that exist."""
    from virtime.cli import build_parser

    parser = build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme.split("## Commands", 1)[1].split("\n## ", 1)[0]
    rows = [r for r in table.splitlines() if r.startswith("| `virtime ")]
    named = set()
    for row in rows:
        cmd_cell, _, flags_cell = (c.strip() for c in row.strip("|").split(" | ", 2))
        name = cmd_cell.strip("`").split()[1]
        assert name in subs.choices, f"README command table: no subcommand {name!r}"
        named.add(name)
        sub = subs.choices[name]
        nested = [a for a in sub._actions if isinstance(a, argparse._SubParsersAction)]
        parsers = list(nested[0].choices.values()) if nested else [sub]
        for flag in re.findall(r"`(--?[\w-]+)", flags_cell):
            assert any(flag in a.option_strings for p in parsers for a in p._actions), \
                f"{cmd_cell}: no flag {flag}"
    assert named == set(subs.choices), set(subs.choices) ^ named


# The checker must be able to fail: a misspelt flag, an unknown program, a renamed function.


def test_checker_fails_on_a_misspelt_flag(sandbox, shared):
    with pytest.raises(AssertionError, match="argparse"):
        run_shell_block("virtime info SLIDE.svs --jsno", sandbox, shared)
    with pytest.raises(AssertionError, match="no flag"):
        check_synopsis("virtime translate SLIDE... -o OUT [--weigths model.pth]")
    with pytest.raises(AssertionError, match="choices"):
        check_synopsis("virtime translate SLIDE -o OUT [--backend auto|pytorch]")


def test_checker_fails_on_unknown_program_or_name(sandbox, shared):
    with pytest.raises(AssertionError, match="add it"):
        run_shell_block("rm -rf OUT", sandbox, shared)
    with pytest.raises(AssertionError, match="AttributeError"):
        run_python_block("import virtime\nvirtime.open_slides('SLIDE.svs')", sandbox, shared)
    with pytest.raises(AssertionError, match="NameError: name 'slide_path'"):  # nothing predefined
        run_python_block("import virtime\nvirtime.open_slide(slide_path)", sandbox, shared)
    with pytest.raises(AssertionError, match="does not paste"):
        check_pastes("for i in range(2):\n    x = i\nprint(x)")
    check_pastes("for i in range(2):\n    x = i\n\nprint(x)")


def test_checker_runs_info_and_parses_blocks(sandbox, shared, capsys):
    ran = run_shell_block("virtime info SLIDE.svs --json   # a comment\n"
                          "virtime info \\\n  --demo", sandbox, shared)
    assert ran == [["info", "SLIDE.svs", "--json"], ["info", "--demo"]]
    assert '"mpp"' in capsys.readouterr().out
    blocks = extract_blocks(ROOT / "x.md", "text\n<!-- readme-test: skip no GPU -->\n```python\n"
                                          "x = 1\n```\n```bash\nvirtime info --demo\n```\n")
    assert [(b.mode, b.reason, b.lang, b.line) for b in blocks] == [
        ("skip", "no GPU", "python", 3), ("run", "", "shell", 6)]
    assert os.path.basename(str(blocks[0].path)) == "x.md"


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_links_to_sections_resolve():
    texts = {p: p.read_text(encoding="utf-8") for p in DOC_FILES}
    anchors = {p: {_slug(h) for h in re.findall(r"^#+ (.*)$", t, re.MULTILINE)}
               for p, t in texts.items()}
    for path, text in texts.items():
        for target, anchor in re.findall(r"\]\(([^)#\s]*)#([^)\s]+)\)", text):
            dest = (path.parent / target).resolve() if target else path
            assert dest in anchors, f"{path.name}: link to {target}, not a checked doc"
            assert anchor in anchors[dest], f"{path.name}: no section #{anchor} in {dest.name}"
        for target in re.findall(r"\]\(((?!https?:)[^)#\s]+)\)", text):
            assert (path.parent / target).exists(), f"{path.name}: {target} does not exist"
