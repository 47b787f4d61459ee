"""Fixtures for the engine tests: a tiny UNet-like module (3 -> 23 channels) and batches for it.

The module has the layer kinds of the GigaTIME decoder that matter to exporters and converters
(conv, batch norm, pooling, bilinear up-sampling, skip concatenation) at a size that builds and
runs in well under a second.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

WINDOW = 32


class TinyUNet(torch.nn.Module):
    """(N, 3, H, W) -> (N, 23, H, W) with one down/up level and a skip connection."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU()
        )
        self.down = torch.nn.Sequential(
            torch.nn.MaxPool2d(2), torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.ReLU()
        )
        self.up = torch.nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
        self.head = torch.nn.Conv2d(8 + 16, 23, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.enc(x)
        b = self.up(self.down(a))
        return self.head(torch.cat([a, b], dim=1))


@pytest.fixture
def tiny_model() -> TinyUNet:
    """Eval-mode tiny model with fixed weights and non-trivial batch-norm statistics."""
    torch.manual_seed(7)
    model = TinyUNet()
    with torch.no_grad():
        model.enc[1].running_mean.uniform_(-0.2, 0.2)
        model.enc[1].running_var.uniform_(0.5, 1.5)
    return model.eval()


@pytest.fixture
def batch(rng: np.random.Generator) -> np.ndarray:
    """Seven ImageNet-normalized-like windows: odd on purpose so chunking leaves a remainder."""
    return rng.standard_normal((7, 3, WINDOW, WINDOW)).astype(np.float32)


def reference(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    """Plain fp32 ``model(x)`` on CPU: what every engine is compared with."""
    with torch.no_grad():
        return model(torch.from_numpy(np.asarray(x, dtype=np.float32))).numpy()


@pytest.fixture
def ref():
    return reference


def _alter_one_weight(path) -> None:
    """Add 1 to one bias of the head conv in the ONNX file: still a valid graph."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(path))
    for i, init in enumerate(proto.graph.initializer):
        arr = numpy_helper.to_array(init)
        if arr.ndim == 1 and arr.shape[0] == 23:  # the head's bias
            arr = arr.copy()
            arr[5] += 1.0
            proto.graph.initializer[i].CopyFrom(numpy_helper.from_array(arr, init.name))
            break
    else:
        raise AssertionError("no 23-channel bias found")
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


@pytest.fixture
def alter_one_weight():
    """``f(onnx_path)``: change one weight of an ONNX file, leaving a valid graph."""
    return _alter_one_weight
