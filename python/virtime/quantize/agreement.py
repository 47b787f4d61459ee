"""How closely an INT8 translator's maps agree with fp32's, per channel, accumulated batch by batch.

For each channel, over all held-out pixels:

* **Dice** of the thresholded maps (``p > threshold``, the features' positivity rule):
  ``2 |A and B| / (|A| + |B|)``, 1.0 when neither map has a positive pixel;
* **Pearson** r of the probabilities (NaN when either map is constant);
* **slide-level density**: the positive share of each slide's held-out pixels under fp32 and
  under INT8; ``density_delta`` is the signed difference (INT8 - fp32) of largest magnitude over
  the slides.

Only sums are kept (float64 moments, integer counts), so any number of tiles fits in memory.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from virtime.channels import CHANNEL_NAMES

__all__ = ["ChannelAgreement"]


class ChannelAgreement:
    """Running per-channel agreement between reference (fp32) and test (INT8) probabilities."""

    def __init__(self, threshold: float = 0.5, channels: tuple[str, ...] = CHANNEL_NAMES) -> None:
        self.threshold = float(threshold)
        self.channels = tuple(channels)
        c = len(self.channels)
        self._moments = np.zeros((6, c), dtype=np.float64)  # n, sx, sy, sxx, syy, sxy
        self._both = np.zeros(c, dtype=np.int64)
        self._slides: dict[str, np.ndarray] = {}  # slide -> (3, C): pixels, pos ref, pos test

    def update(self, reference: np.ndarray, test: np.ndarray, slide: str) -> None:
        """Add a batch of probabilities ``(N, C, H, W)`` from one slide."""
        if reference.shape != test.shape or reference.ndim != 4 or \
                reference.shape[1] != len(self.channels):
            raise ValueError(f"expected two (N, {len(self.channels)}, H, W) arrays, got "
                             f"{reference.shape} and {test.shape}")
        x = np.moveaxis(reference, 1, 0).reshape(len(self.channels), -1).astype(np.float64)
        y = np.moveaxis(test, 1, 0).reshape(len(self.channels), -1).astype(np.float64)
        self._moments += np.stack([np.full(len(x), x.shape[1], dtype=np.float64),
                                   x.sum(1), y.sum(1), (x * x).sum(1), (y * y).sum(1),
                                   (x * y).sum(1)])
        pos_x, pos_y = x > self.threshold, y > self.threshold
        self._both += (pos_x & pos_y).sum(1)
        counts = self._slides.setdefault(slide, np.zeros((3, len(self.channels)), np.int64))
        counts[0] += x.shape[1]
        counts[1] += pos_x.sum(1)
        counts[2] += pos_y.sum(1)

    def summary(self) -> dict[str, dict[str, Any]]:
        """Per channel: ``dice``, ``pearson``, ``density_fp32`` / ``density_int8`` (pooled over
        slides), ``density_delta`` (largest-magnitude per-slide difference),
        ``positive_pixels_fp32`` and ``positive_pixels_int8`` (held-out pixels above the
        threshold: the gate holds Dice only where they are not too few)."""
        if not self._slides:
            raise ValueError("no tiles were compared")
        n, sx, sy, sxx, syy, sxy = self._moments
        cov = sxy / n - (sx / n) * (sy / n)
        vx, vy = sxx / n - (sx / n) ** 2, syy / n - (sy / n) ** 2
        with np.errstate(invalid="ignore", divide="ignore"):
            pearson = np.where((vx > 0) & (vy > 0), cov / np.sqrt(vx * vy), np.nan)
        per_slide = np.stack(list(self._slides.values()))  # (S, 3, C)
        pixels, pos_ref, pos_test = per_slide[:, 0], per_slide[:, 1], per_slide[:, 2]
        total_ref, total_test = pos_ref.sum(0), pos_test.sum(0)
        denom = total_ref + total_test
        dice = np.where(denom > 0, 2 * self._both / np.maximum(denom, 1), 1.0)
        deltas = (pos_test - pos_ref) / pixels  # (S, C)
        worst = deltas[np.abs(deltas).argmax(0), np.arange(deltas.shape[1])]
        out = {}
        for i, name in enumerate(self.channels):
            out[name] = {
                "dice": float(dice[i]),
                "pearson": float(pearson[i]) if np.isfinite(pearson[i]) else None,
                "density_fp32": float(total_ref[i] / pixels[:, i].sum()),
                "density_int8": float(total_test[i] / pixels[:, i].sum()),
                "density_delta": float(worst[i]),
                "positive_pixels_fp32": int(total_ref[i]),
                "positive_pixels_int8": int(total_test[i]),
            }
        return out

    @property
    def slides(self) -> list[str]:
        return list(self._slides)
