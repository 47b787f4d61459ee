"""The command line's error paths: one clear line and a non-zero exit, never a traceback.

Each test feeds a command what a user gets wrong (a read-only folder, a full disk, a port in use,
a file that is not what the flag wants) and checks what the user reads. Read-only folders and
full disks are simulated at the file-system calls (the tests may run as root, which ignores
permissions); the OS error is the one the kernel gives.
"""

from __future__ import annotations

import builtins
import errno
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from virtime.channels import PROTEIN_CHANNELS
from virtime.cli import main

# What must never reach a user's terminal.
FORBIDDEN = re.compile(r"Traceback|UserWarning:|RuntimeWarning:|np\.(?:u?int|float|bool|str)\w*\(")


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str], str]:
    """``(exit code, stderr lines, stdout)`` of ``virtime ARGV``, run in this process; usage
    errors (argparse's SystemExit) give their exit code too."""
    try:
        rc = main(argv)
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    assert not FORBIDDEN.search(out + err), out + err
    return rc, [ln for ln in err.splitlines() if ln.strip()], out


def one_error_line(argv: list[str], capsys: pytest.CaptureFixture[str], command: str) -> str:
    """The single ``virtime COMMAND: error: ...`` line a failing command prints (exit 2)."""
    rc, err, _ = run(argv, capsys)
    assert rc == 2, err
    errors = [ln for ln in err if ": error: " in ln]
    assert len(errors) == 1 and errors[0].startswith(f"virtime {command}: error: "), err
    assert all(": warning: " in ln for ln in err if ln not in errors), err  # nothing else
    return errors[0]


def deny_writes(monkeypatch: pytest.MonkeyPatch, where: Callable[[Path], bool], code: int) -> None:
    """Files created where ``where(path)`` fail with OSError ``code`` (EROFS, ENOSPC ...), as
    the kernel would fail them: temporary files, ``open`` for writing, new folders."""
    message = os.strerror(code)
    real_mkstemp, real_open, real_mkdir = tempfile.mkstemp, builtins.open, os.mkdir

    def mkstemp(*args, **kwargs):
        folder = Path(kwargs.get("dir") or tempfile.gettempdir())
        name = folder / f"{kwargs.get('prefix', '')}XXXXXX{kwargs.get('suffix', '')}"
        if where(name):
            raise OSError(code, message, str(name))
        return real_mkstemp(*args, **kwargs)

    def open_(file, mode="r", *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and any(m in mode for m in "wax+") \
                and where(Path(file)):
            raise OSError(code, message, str(file))
        return real_open(file, mode, *args, **kwargs)

    def mkdir(path, *args, **kwargs):
        if where(Path(path)):
            raise OSError(code, message, str(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(builtins, "open", open_)
    monkeypatch.setattr(os, "mkdir", mkdir)


def inside(folder: Path) -> Callable[[Path], bool]:
    return lambda p: folder.resolve() in Path(p).resolve().parents


# ------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def translated(tmp_path_factory, small_slide, tiny_weights) -> Path:
    """A finished slide folder (tiny model, small slide, seconds)."""
    out = tmp_path_factory.mktemp("translated")
    assert main(["translate", str(small_slide), "-o", str(out), "--weights", str(tiny_weights),
                 "-q", "--backend", "onnxruntime", "--tile-size", "128", "--threads", "1",
                 "--no-features"]) == 0
    return out / Path(small_slide).stem


@pytest.fixture
def no_serving(monkeypatch):
    """A viewer that starts serving fails the test instead of blocking it."""
    from virtime.view import ViewServer

    def serve(self):
        pytest.fail("the viewer started despite the bad input")

    monkeypatch.setattr(ViewServer, "serve_forever", serve)


@pytest.fixture
def slide_copy(translated, tmp_path) -> Path:
    return Path(shutil.copytree(translated, tmp_path / translated.name))


@pytest.fixture(scope="module")
def cohort_tables(tmp_path_factory) -> list[str]:
    """``--features F --clinical C`` of 80 patients in two subtypes, independent features."""
    rng = np.random.default_rng(20251123)
    d = tmp_path_factory.mktemp("cohort")
    n = 80
    ids = [f"P{i:03d}" for i in range(n)]
    feats = pd.DataFrame({f"{c}.density": rng.normal(size=n) for c in PROTEIN_CHANNELS})
    feats.insert(0, "patient_id", ids)
    feats.insert(0, "slide_id", [f"S{i:03d}" for i in range(n)])
    feats.to_parquet(d / "features.parquet")
    pd.DataFrame({"patient_id": ids, "cancer_type": "LUNG", "subtype": ["LUAD", "LUSC"] * (n // 2),
                  "KRAS": rng.integers(0, 2, n), "MSI": 1,  # one class: warned, not analysed
                  "os_time": rng.exponential(300.0, n).round(1),
                  "os_event": rng.integers(0, 2, n)}).to_csv(d / "clinical.csv", index=False)
    return ["--features", str(d / "features.parquet"), "--clinical", str(d / "clinical.csv")]


# ------------------------------------------------------------- 10: one line, never a traceback
def test_features_in_a_read_only_folder(slide_copy, capsys, monkeypatch):
    deny_writes(monkeypatch, inside(slide_copy), errno.EROFS)
    line = one_error_line(["features", "-q", str(slide_copy)], capsys, "features")
    assert line == f"virtime features: error: {slide_copy / 'features.parquet'}: " \
                   f"{os.strerror(errno.EROFS)}"


STATS = {
    "associate": ["--levels", "pan-cancer", "--min-patients", "10"],
    "survival": ["--levels", "pan-cancer", "--min-patients", "10", "--min-events", "5",
                 "--no-signature"],
    "report": ["--levels", "pan-cancer", "--min-patients", "10", "--no-survival"],
}


@pytest.mark.parametrize("command", sorted(STATS))
def test_statistics_output_in_a_read_only_folder(command, cohort_tables, tmp_path, capsys,
                                                 monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    deny_writes(monkeypatch, inside(ro), errno.EACCES)
    target = ro / ("r.html" if command == "report" else "t.csv")
    line = one_error_line([command, *cohort_tables, "-o", str(target), "-q", *STATS[command]],
                          capsys, command)
    assert line == f"virtime {command}: error: {target}: {os.strerror(errno.EACCES)}"
    assert list(ro.iterdir()) == []


@pytest.mark.parametrize("command", ["associate", "survival"])
def test_plot_in_a_read_only_folder_after_the_table(command, cohort_tables, tmp_path, capsys,
                                                     monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    deny_writes(monkeypatch, inside(ro), errno.EROFS)
    table, plot = tmp_path / "t.csv", ro / "p.png"
    line = one_error_line([command, *cohort_tables, "-o", str(table), "--plot", str(plot), "-q",
                           *STATS[command]], capsys, command)
    assert line == f"virtime {command}: error: {plot}: {os.strerror(errno.EROFS)}"
    assert table.is_file()  # the table was written before the plot failed


def test_view_port_out_of_range_and_in_use(translated, capsys, no_serving):
    rc, err, _ = run(["view", str(translated), "--port", "70000", "--no-browser"], capsys)
    assert rc == 2 and err[-1].startswith("virtime view: error:") and "70000" in err[-1]
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        line = one_error_line(["view", str(translated), "--port", str(port), "--no-browser"],
                              capsys, "view")
    assert f"port {port}: {os.strerror(errno.EADDRINUSE)}" in line


@pytest.mark.parametrize("content", [b"junk\n", None], ids=["not-npy", "3-d-array"])
def test_view_with_a_garbage_tissue_mask(slide_copy, content, capsys, no_serving):
    mask = slide_copy / "tissue_mask.npy"
    if content is None:
        np.save(mask, np.zeros((2, 3, 4)))
    else:
        mask.write_bytes(content)
    line = one_error_line(["view", str(slide_copy), "--no-browser"], capsys, "view")
    assert f"{mask}: not a tissue mask" in line and "allow_pickle" not in line


def test_cohort_manifest_with_a_300_character_slide_id(small_slide, tmp_path, capsys):
    manifest = tmp_path / "m.csv"
    pd.DataFrame({"path": [str(small_slide)], "slide_id": ["x" * 300],
                  "patient_id": ["P1"]}).to_csv(manifest, index=False)
    line = one_error_line(["cohort", "run", str(manifest), "-o", str(tmp_path / "out"),
                           "--no-dashboard"], capsys, "cohort")
    assert "m.csv" in line and "300 bytes long" in line


def test_full_disk_while_the_cohort_ledger_is_written(small_slide, tmp_path, capsys,
                                                      monkeypatch):
    manifest = tmp_path / "m.csv"
    pd.DataFrame({"path": [str(small_slide)], "slide_id": ["s1"],
                  "patient_id": ["P1"]}).to_csv(manifest, index=False)
    out = tmp_path / "out"
    deny_writes(monkeypatch, lambda p: "cohort_ledger" in p.name, errno.ENOSPC)
    line = one_error_line(["cohort", "run", str(manifest), "-o", str(out), "--no-dashboard"],
                          capsys, "cohort")
    assert re.fullmatch(rf"virtime cohort: error: {re.escape(str(out))}/\S*cohort_ledger\S*: "
                        rf"{os.strerror(errno.ENOSPC)}", line), line


def test_cells_export_on_a_file_that_is_no_cell_table(translated, tmp_path, capsys):
    text = tmp_path / "cells.parquet"
    text.write_text("slide_id,x\n")
    line = one_error_line(["cells", "export", str(text), "-o", str(tmp_path / "c.h5ad")],
                          capsys, "cells")
    assert f"{text}: not a Parquet file" in line
    tiles = translated / "tiles.parquet"  # Parquet, but another table
    line = one_error_line(["cells", "export", str(tiles), "-o", str(tmp_path / "c.h5ad")],
                          capsys, "cells")
    assert f"{tiles}: not a virtime cell table" in line
    assert not (tmp_path / "c.h5ad").exists()


def test_small_text_file_as_weights(small_slide, tmp_path, capsys):
    weights = tmp_path / "model.pth"
    weights.write_text("see https://example.org for the weights\n")
    line = one_error_line(["translate", str(small_slide), "-o", str(tmp_path / "o"),
                           "--weights", str(weights)], capsys, "translate")
    assert line == (f"virtime translate: error: {weights}: not a checkpoint: a text file "
                    f"({weights.stat().st_size} bytes), not weights")
    line = one_error_line(["embed", str(small_slide), "-o", str(tmp_path / "e"),
                           "--tile-weights", str(weights)], capsys, "embed")
    assert f"{weights}: not a checkpoint" in line


ENOSPC_IN_ZARR = """
import errno, sys
import zarr.storage
real = zarr.storage.LocalStore.set
writes = []
async def full(self, key, value, *a, **k):
    if key.startswith("0/") and not key.endswith((".zarray", ".zattrs")):
        writes.append(key)
        if len(writes) > 1:  # the disk fills after the first chunk
            raise OSError(errno.ENOSPC, "No space left on device", f"{self.root}/{key}")
    return await real(self, key, value, *a, **k)
zarr.storage.LocalStore.set = full
from virtime.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_full_disk_in_translate_is_one_line_in_a_real_process(small_slide, tiny_weights,
                                                               tmp_path):
    """In its own process, so whatever zarr's event loop or the interpreter's shutdown prints
    about the failed writes is seen too."""
    import subprocess
    import sys

    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-c", ENOSPC_IN_ZARR, "translate", str(small_slide), "-o", str(out),
         "--weights", str(tiny_weights), "-q", "--backend", "onnxruntime", "--tile-size", "128",
         "--threads", "1", "--no-features"],
        capture_output=True, text=True, timeout=300)
    err = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(err) == 1, proc.stderr
    assert err[0].startswith("virtime translate: error: ") and "No space left on device" in err[0]
    assert str(out / "small" / "mif.ome.zarr") in err[0]  # names the file


# ------------------------------------------------- every command: its error path in one line
LFS_POINTER = (b"version https://git-lfs.github.com/spec/v1\noid sha256:" + b"0" * 64
               + b"\nsize 1340000000\n")
PNG_BYTES = b"\x89PNG\r\n\x1a\n" + bytes(24)

# One bad input per command (and cohort/cells subcommand): {t} is a scratch folder holding
# text.txt (a text file), lfs.pth (a git-lfs pointer), img.pth (a PNG), page.pth (HTML).
WALK = {
    "simulate-pairs": ["simulate-pairs", "-q", "-o", "{t}/text.txt/sub", "--tiles", "2"],
    "train": ["train", "{t}/no_pairs", "-o", "{t}/trained"],
    "evaluate": ["evaluate", "{t}/no_pairs", "-o", "{t}/ev.json", "--demo"],
    "export": ["export", "--weights", "{t}/text.txt", "--onnx", "{t}/m.onnx"],
    "info": ["info", "{t}/text.txt"],
    "tiles": ["tiles", "{t}/missing.svs", "-o", "{t}/tiles"],
    "translate": ["translate", "{slide}", "-o", "{t}/out", "--weights", "{t}/lfs.pth"],
    "quantize": ["quantize", "--weights", "{t}/lfs.pth", "--calibrate", "{slide}", "-o", "{t}/q"],
    "bench": ["bench", "--weights", "{t}/page.pth"],
    "features": ["features", "-q", "{t}/no_slide_folder"],
    "cohort run": ["cohort", "run", "{t}/no_manifest.csv", "-o", "{t}/cohort"],
    "cohort merge": ["cohort", "merge", "{t}/no_cohort"],
    "cohort status": ["cohort", "status", "{t}/no_cohort"],
    "validate": ["validate", "--features", "{t}/text.txt", "--clinical", "{t}/text.txt"],
    "associate": ["associate", "--features", "{t}/text.txt", "--clinical", "{t}/text.txt",
                  "-o", "{t}/a.csv"],
    "survival": ["survival", "--features", "{t}/text.txt", "--clinical", "{t}/none.csv",
                 "-o", "{t}/s.csv"],
    "report": ["report", "--features", "{t}/none.parquet", "--clinical", "{t}/text.txt",
               "-o", "{t}/r.html"],
    "embed": ["embed", "{slide}", "-o", "{t}/emb", "--tile-weights", "{t}/img.pth"],
    "probe": ["probe", "--labels", "{t}/none.csv", "--label", "MSI", "--mif", "{t}/text.txt"],
    "demo": ["demo", "-q", "-o", "{t}/demo", "--weights", "{t}/lfs.pth"],
    "cells export": ["cells", "export", "{t}/text.txt", "-o", "{t}/c.h5ad"],
    "view": ["view", "{t}/no_slide_folder", "--no-browser"],
    "audit": ["audit", "--features", "{t}/text.txt"],
    "mcp": ["mcp", "--allow", "{t}/no_folder", "--output", "{t}/text.txt"],
}


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    t = tmp_path_factory.mktemp("walk")
    (t / "text.txt").write_text("slide_id,x\nS1,1\n")
    (t / "lfs.pth").write_bytes(LFS_POINTER)
    (t / "img.pth").write_bytes(PNG_BYTES)
    (t / "page.pth").write_text("<!DOCTYPE html><html><body>Sign in</body></html>\n")
    return t


def test_the_walk_covers_every_command():
    import argparse

    from virtime.cli import build_parser

    def commands(parser, prefix=""):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    nested = list(commands(sub, f"{prefix}{name} "))
                    yield from nested or [f"{prefix}{name}"]

    assert sorted(commands(build_parser())) == sorted(WALK)


@pytest.mark.parametrize("command", sorted(WALK))
def test_every_command_fails_in_one_line(command, scratch, small_slide, capsys):
    argv = [a.format(t=scratch, slide=small_slide) for a in WALK[command]]
    one_error_line(argv, capsys, argv[0])
