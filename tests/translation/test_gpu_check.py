"""benchmarks/gpu/check.sh --dry-run: the GPU check runs end to end on CPU, so it works the first
time it meets a GPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_check_dry_run(tmp_path) -> None:
    out = tmp_path / "table.md"
    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.run(
        ["bash", str(ROOT / "benchmarks/gpu/check.sh"), "--dry-run", "--out", str(out),
         "--workdir", str(tmp_path / "work")],
        capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = out.read_text()
    rows = [line.split("|")[1:-1] for line in text.splitlines() if line.startswith("| ")][1:]
    parts = {r[0].strip() for r in rows}
    assert {"a official loop", "b bare engine", "c virtime translate"} <= parts
    measured = {(r[0].strip(), r[2].strip()) for r in rows if r[3].strip() not in ("-", "")}
    assert ("b bare engine", "fp32") in measured
    assert any(p == "c virtime translate" for p, _ in measured)
    assert "skipped: needs CUDA" in text  # CUDA-only variants say why they are absent
    assert (tmp_path / "table.md.json").is_file()
