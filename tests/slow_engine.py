"""Slows every engine a child process builds, so a test can signal or cancel a run mid-slide.

Tests that stop a real ``virtime`` process (SIGTERM, Ctrl-C, an MCP cancel) wait until the run is
at work and then signal it. With the tiny test model a whole slide takes about a second on an
idle machine, so the signal could arrive after the run had finished. :func:`slow_engine_env`
returns an environment whose ``sitecustomize`` wraps ``virtime.engines.create_engine`` so each
batch sleeps first: every Python process started with it (the CLI, its Dask workers, the MCP
server's translation worker) runs slowly enough to be stopped while it works.
"""

from __future__ import annotations

import os
from pathlib import Path

_SITECUSTOMIZE = '''\
import os
import time

import virtime.engines as _engines

_create_engine = _engines.create_engine
_delay = float(os.environ["VIRTIME_TEST_ENGINE_DELAY"])


def create_engine(*args, **kwargs):
    engine = _create_engine(*args, **kwargs)
    run = engine.run

    def slow_run(batch):
        time.sleep(_delay)
        return run(batch)

    engine.run = slow_run
    return engine


_engines.create_engine = create_engine
'''


def slow_engine_env(folder: Path, seconds_per_batch: float) -> dict[str, str]:
    """``os.environ`` plus a ``sitecustomize`` (written to ``folder``) that sleeps
    ``seconds_per_batch`` before each engine batch in every process started with it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(_SITECUSTOMIZE)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(folder), env.get("PYTHONPATH")) if p)
    env["VIRTIME_TEST_ENGINE_DELAY"] = str(seconds_per_batch)
    return env
