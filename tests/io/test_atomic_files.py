"""virtime.io's atomic writers: the shapes the package's writers need, and no other writer.

``atomic_files`` serves writers that put companion files beside their main file (an ONNX
graph with external data, an OpenVINO IR's ``.bin``); ``mode=`` serves the shared model cache.
Every temporary-name-then-rename in the package goes through :mod:`virtime.io`.
"""

from __future__ import annotations

import ast
import os
import stat
from pathlib import Path

import pytest

import virtime
from virtime.io import atomic_files, atomic_path, atomic_write_bytes


def test_atomic_files_renames_companions_then_the_main_file(tmp_path: Path) -> None:
    target = tmp_path / "model.xml"
    order: list[str] = []
    real_replace = os.replace

    def spy(src, dst):  # noqa: ANN001
        order.append(Path(dst).name)
        real_replace(src, dst)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "replace", spy)
        with atomic_files(target) as tmp:
            assert tmp.name == target.name and tmp.parent != tmp_path
            tmp.write_text("<xml/>")
            tmp.with_suffix(".bin").write_bytes(b"\x01\x02")
            assert not target.exists()  # nothing in place before the block ends
    assert order == ["model.bin", "model.xml"]
    assert target.read_text() == "<xml/>"
    assert (tmp_path / "model.bin").read_bytes() == b"\x01\x02"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.bin", "model.xml"]


def test_atomic_files_leaves_old_files_on_error(tmp_path: Path) -> None:
    target = tmp_path / "graph.onnx"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_files(target) as tmp:
        tmp.write_bytes(b"new")
        (tmp.parent / "weights.data").write_bytes(b"w")
        raise RuntimeError("export failed")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["graph.onnx"]  # no temporary folder


def test_mode_overrides_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        atomic_write_bytes(tmp_path / "shared.bin", b"x", mode=0o644)
        with atomic_path(tmp_path / "private.bin") as tmp:
            tmp.write_bytes(b"y")
        with atomic_files(tmp_path / "m.xml", mode=0o644) as tmp:
            tmp.write_bytes(b"z")
            tmp.with_suffix(".bin").write_bytes(b"z")
    finally:
        os.umask(old)
    perms = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    assert perms == {"shared.bin": 0o644, "private.bin": 0o600, "m.xml": 0o644, "m.bin": 0o644}


_RENAMES = {("os", "replace"), ("os", "rename"), ("shutil", "move"), ("tempfile", "mkstemp")}


def test_no_module_outside_io_renames_temporary_files_by_hand() -> None:
    """A temporary name renamed into place is written once, in virtime.io."""
    root = Path(virtime.__file__).parent
    found = []
    for path in sorted(root.rglob("*.py")):
        if path.relative_to(root).parts[0] == "io":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and isinstance(node.func.value, ast.Name)
                    and (node.func.value.id, node.func.attr) in _RENAMES):
                found.append(f"{path.relative_to(root)}:{node.lineno}")
    assert found == []
