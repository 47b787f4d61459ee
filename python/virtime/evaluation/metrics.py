"""The GigaTIME evaluation protocol and the per-channel overlap metrics.

Per tile and channel: the target is coarsened like the training target (bilinear 1/8 down and
back up), the prediction is binarized at probability > 0.5, both are summed in 8x8 boxes, and the
Pearson correlation of the two box-sum maps is computed; the per-channel score is the mean over
tiles.

Undefined Pearson: if the target's box sums are constant in a tile (e.g. no positive pixel), the
tile is skipped for that channel (every predictor would be undefined there). If only the
prediction is constant, its Pearson is taken as 0: a constant prediction carries no information
about where the signal is. This is what lets a constant baseline be scored at all.

Dice and IoU are pixel-wise between the binarized prediction and the binary (uncoarsened) target,
with counts pooled over all tiles; NaN when a channel has no positive pixel in either.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from virtime.channels import CHANNEL_NAMES
from virtime.training.losses import coarsen_targets

__all__ = ["box_sums", "centred_boxes", "tile_pearson", "EvalAccumulator", "FLAT_NORM"]


def box_sums(x: np.ndarray, box: int = 8) -> np.ndarray:
    """Sums over non-overlapping ``box`` x ``box`` blocks of the last two axes (cropped to fit)."""
    h, w = x.shape[-2] // box * box, x.shape[-1] // box * box
    x = x[..., :h, :w]
    return x.reshape(*x.shape[:-2], h // box, box, w // box, box).sum(axis=(-3, -1))


def tile_pearson(pred_boxes: np.ndarray, target_boxes: np.ndarray) -> np.ndarray:
    """Pearson per (tile, channel) of ``(N, C, h, w)`` box maps; NaN where the target is constant,
    0 where only the prediction is."""
    p, t, sp, st = centred_boxes(pred_boxes, target_boxes)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (p * t).sum(-1) / (sp * st)
    r = np.where(sp <= FLAT_NORM, 0.0, r)
    return np.where(st <= FLAT_NORM, np.nan, r)


FLAT_NORM = 1e-9
"""A box map whose centred norm is at most this is flat (constant): no correlation is defined."""


def centred_boxes(pred_boxes: np.ndarray,
                  target_boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(N, C, h, w)`` box maps as mean-centred float64 ``(N, C, h*w)`` vectors and their norms.

    The one place both Pearson protocols (own channel, and channel x channel) centre their inputs,
    so the two cannot drift apart."""
    p = pred_boxes.reshape(*pred_boxes.shape[:2], -1).astype(np.float64)
    t = target_boxes.reshape(*target_boxes.shape[:2], -1).astype(np.float64)
    p = p - p.mean(-1, keepdims=True)
    t = t - t.mean(-1, keepdims=True)
    return p, t, np.sqrt((p * p).sum(-1)), np.sqrt((t * t).sum(-1))


@dataclass
class EvalAccumulator:
    """Accumulates the protocol over batches; :meth:`summary` gives one row per channel."""

    channels: tuple[str, ...] = CHANNEL_NAMES
    box: int = 8
    factor: int = 8
    threshold: float = 0.5
    _r_sum: np.ndarray = field(init=False, repr=False)
    _r_n: np.ndarray = field(init=False, repr=False)
    _tp: np.ndarray = field(init=False, repr=False)
    _fp: np.ndarray = field(init=False, repr=False)
    _fn: np.ndarray = field(init=False, repr=False)
    _pos: np.ndarray = field(init=False, repr=False)
    _pix: int = field(init=False, default=0, repr=False)

    def __post_init__(self) -> None:
        c = len(self.channels)
        self._r_sum, self._r_n = np.zeros(c), np.zeros(c, np.int64)
        self._tp, self._fp, self._fn, self._pos = (np.zeros(c, np.int64) for _ in range(4))

    def update(self, probs: np.ndarray | torch.Tensor, targets: np.ndarray | torch.Tensor) -> None:
        """Adds a batch: ``probs`` float ``(N, C, H, W)`` in [0, 1], ``targets`` binary, same shape."""
        if isinstance(probs, np.ndarray) and not probs.flags.writeable:
            probs = np.array(probs, dtype=np.float32)  # e.g. a broadcast constant prediction
        if isinstance(targets, np.ndarray) and not targets.flags.writeable:
            targets = np.array(targets)
        probs_t = torch.as_tensor(probs).float()
        targ_t = torch.as_tensor(targets)
        if probs_t.shape != targ_t.shape or probs_t.ndim != 4:
            raise ValueError(f"probs {tuple(probs_t.shape)} and targets {tuple(targ_t.shape)} "
                             "must both be (N, C, H, W)")
        binar = (probs_t > self.threshold).numpy()
        soft = coarsen_targets(targ_t.float(), self.factor).numpy()
        r = tile_pearson(box_sums(binar.astype(np.float64), self.box), box_sums(soft, self.box))
        ok = ~np.isnan(r)
        self._r_sum += np.where(ok, r, 0.0).sum(0)
        self._r_n += ok.sum(0)
        t = targ_t.numpy().astype(bool)
        self._tp += (binar & t).sum((0, 2, 3))
        self._fp += (binar & ~t).sum((0, 2, 3))
        self._fn += (~binar & t).sum((0, 2, 3))
        self._pos += t.sum((0, 2, 3))
        self._pix += t.shape[0] * t.shape[2] * t.shape[3]

    def pearson(self) -> np.ndarray:
        """Mean per-tile Pearson per channel (NaN if no tile had a non-constant target)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self._r_n > 0, self._r_sum / np.maximum(self._r_n, 1), np.nan)

    def summary(self) -> pd.DataFrame:
        """One row per channel: pearson, n_tiles (tiles that counted), dice, iou, prevalence."""
        tp, fp, fn = self._tp.astype(float), self._fp.astype(float), self._fn.astype(float)
        with np.errstate(invalid="ignore", divide="ignore"):
            dice = np.where(tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan)
            iou = np.where(tp + fp + fn > 0, tp / (tp + fp + fn), np.nan)
        return pd.DataFrame({
            "channel": list(self.channels), "pearson": self.pearson(), "n_tiles": self._r_n,
            "dice": dice, "iou": iou, "prevalence": self._pos / max(self._pix, 1),
        })
