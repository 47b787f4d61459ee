"""``run_demo`` called from a plain script with no ``if __name__ == "__main__":`` guard.

A pool of spawned processes re-imports the calling script in each worker, which then dies while
"bootstrapping" (BrokenProcessPool). The demo must run from such a script as it runs from the CLI.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest


@pytest.mark.slow
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: the slides render without a pool")
def test_run_demo_from_a_script_without_main_guard(tmp_path, tiny_demo_weights):
    out = tmp_path / "demo"
    script = tmp_path / "plain_script.py"
    # Eight slides: the renderer uses a pool of two workers (one per four slides, up to a core each).
    script.write_text(textwrap.dedent(f"""\
        from virtime.demo import DemoConfig, run_demo
        from virtime.models import load

        print("top of the script")
        result = run_demo(load({str(tiny_demo_weights)!r}), {str(out)!r},
                          DemoConfig(patients=8, second_patients=0, slide_px=128, cells=False,
                                     show_progress=False))
        print("slides", len(result.results["truth_table"]) > 0)
        """))
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "BrokenProcessPool" not in proc.stderr and "bootstrapping" not in proc.stderr
    assert proc.stdout.count("top of the script") == 1  # the script ran once, in one process
    assert len(list((out / "cohort_a" / "slides").glob("*.svs"))) == 8
    assert len(list((out / "cohort_a" / "virtual").glob("*/summary.json"))) == 8
