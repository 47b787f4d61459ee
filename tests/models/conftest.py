"""One torch thread in these tests: the CI machine has 2 shared cores and small convolutions
run far slower when threads oversubscribe them."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
