"""The independent reference path of the translation tests: read a tile with openslide-python,
normalize it with numpy and run the model on it directly.

Importable from any test because tests/conftest.py puts this folder on ``sys.path``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])


def normalized_tile(slide_path: str | Path, x: int, y: int, size: int) -> Any:
    """The ``size``-px level-0 tile at ``(x, y)`` as a float32 tensor ``(3, size, size)``:
    openslide-python's RGBA composited on white, rounded, ImageNet-normalized."""
    import openslide
    import torch

    with openslide.OpenSlide(str(slide_path)) as osr:
        rgba = np.asarray(osr.read_region((int(x), int(y)), 0, (size, size))).astype(float)
    rgb = rgba[..., :3] * (rgba[..., 3:] / 255) + 255 * (1 - rgba[..., 3:] / 255)
    return torch.from_numpy(((np.rint(rgb) / 255 - MEAN) / STD).transpose(2, 0, 1)).float()


def direct_tile_probs(slide_path: str | Path, model: Any, x: int, y: int, *, size: int,
                      window: int) -> np.ndarray:
    """Probabilities ``(23, size, size)`` of the tile at ``(x, y)``: the model on each
    non-overlapping ``window``-px window, then a sigmoid."""
    import torch

    tensor = normalized_tile(slide_path, x, y, size)
    probs = np.zeros((23, size, size), np.float32)
    with torch.inference_mode():
        for wy in range(0, size, window):
            for wx in range(0, size, window):
                logit = model(tensor[None, :, wy : wy + window, wx : wx + window])[0]
                probs[:, wy : wy + window, wx : wx + window] = torch.sigmoid(logit).numpy()
    return probs
