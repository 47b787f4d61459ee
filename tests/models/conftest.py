"""One torch thread in these tests: the CI machine has 2 shared cores and small convolutions
run far slower when threads oversubscribe them."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _one_torch_thread(one_torch_thread):
    """Every test here runs with tests/conftest.py's ``one_torch_thread``."""
