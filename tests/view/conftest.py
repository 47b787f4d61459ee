"""Fixtures of the viewer tests; the helpers live in _support.py (loaded by path: pytest runs with
--import-mode=importlib, so test modules cannot import each other)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest


def _load_support():
    name = "virtime_view_test_support"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("_support.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="session")
def syn():
    """The support module: constants of the synthetic slide, make_output, Browser."""
    return _load_support()


@pytest.fixture(scope="session")
def output_dir(tmp_path_factory, syn) -> Path:
    return syn.make_output(tmp_path_factory.mktemp("view"))


@pytest.fixture(scope="session")
def browser(syn):
    b = syn.Browser(syn.chromium_exe())
    yield b
    b.close()
