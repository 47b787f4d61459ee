"""The specificity matrix: each predicted channel scored against every measured channel.

Per-channel scores (:mod:`virtime.evaluation.metrics`) say how well virtual CD68 matches
measured CD68, not whether it matches measured CD3 better — which independent validations found
for a third of the channels. Here predicted channel *i* is compared with measured channel *j*
for every pair, by the same protocol as the diagonal (binarized prediction, coarsened target,
8x8 box sums, per-tile Pearson averaged over tiles; Dice pooled over pixels), so the diagonal
equals the per-channel scores and an off-diagonal value above it is a finding.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from virtime.channels import CHANNEL_NAMES
from virtime.errors import InputDataError
from virtime.evaluation.metrics import FLAT_NORM, box_sums, centred_boxes
from virtime.training.losses import coarsen_targets

__all__ = ["SpecificityAccumulator", "SpecificityMatrix", "read_specificity"]

PEARSON_FILE = "specificity_pearson.csv"
DICE_FILE = "specificity_dice.csv"


@dataclass(frozen=True)
class SpecificityMatrix:
    """``pearson`` and ``dice``: DataFrames, rows the predicted channel, columns the measured one."""

    pearson: pd.DataFrame
    dice: pd.DataFrame

    def write(self, out_dir: str | Path) -> tuple[Path, Path]:
        """Writes the two matrices as CSV (atomically) into ``out_dir``."""
        from virtime.io import atomic_path

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = []
        for name, frame in ((PEARSON_FILE, self.pearson), (DICE_FILE, self.dice)):
            with atomic_path(out / name) as tmp:
                frame.to_csv(tmp, index_label="predicted")
            paths.append(out / name)
        return paths[0], paths[1]


def read_specificity(folder: str | Path) -> SpecificityMatrix:
    """Reads the matrices :meth:`SpecificityMatrix.write` wrote (``virtime evaluate`` output)."""
    folder = Path(folder)
    frames = []
    for name in (PEARSON_FILE, DICE_FILE):
        path = folder / name
        try:
            df = pd.read_csv(path, index_col=0)
        except (OSError, ValueError) as exc:
            raise InputDataError(f"{path}: cannot read the specificity matrix ({exc}); run "
                                 "`virtime evaluate` into that folder first") from exc
        if list(df.index) != list(df.columns) or not len(df):
            raise InputDataError(f"{path}: not a square channel x channel matrix")
        unknown = [c for c in df.columns if c not in CHANNEL_NAMES]
        if unknown:
            raise InputDataError(f"{path}: unknown channel(s) {unknown[:5]}")
        df.index.name = None
        frames.append(df.astype(float))
    return SpecificityMatrix(*frames)


def _tile_cross_pearson(pred_boxes: np.ndarray, target_boxes: np.ndarray) -> np.ndarray:
    """Pearson per (tile, predicted i, measured j) of box maps; NaN where target j is constant,
    0 where only prediction i is (the conventions of :func:`~virtime.evaluation.tile_pearson`)."""
    p, t, sp, st = centred_boxes(pred_boxes, target_boxes)
    cov = np.einsum("nip,njp->nij", p, t)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = cov / (sp[:, :, None] * st[:, None, :])
    r = np.where(sp[:, :, None] <= FLAT_NORM, 0.0, r)
    return np.where(st[:, None, :] <= FLAT_NORM, np.nan, r)


@dataclass
class SpecificityAccumulator:
    """Accumulates the channel x channel protocol over batches; :meth:`result` gives the matrices."""

    channels: tuple[str, ...] = CHANNEL_NAMES
    box: int = 8
    factor: int = 8
    threshold: float = 0.5
    _r_sum: np.ndarray = field(init=False, repr=False)
    _r_n: np.ndarray = field(init=False, repr=False)
    _both: np.ndarray = field(init=False, repr=False)
    _pred_pos: np.ndarray = field(init=False, repr=False)
    _targ_pos: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        c = len(self.channels)
        self._r_sum, self._r_n = np.zeros((c, c)), np.zeros((c, c), np.int64)
        self._both = np.zeros((c, c))
        self._pred_pos, self._targ_pos = np.zeros(c), np.zeros(c)

    def update(self, probs: np.ndarray, targets: np.ndarray) -> None:
        """Adds a batch: ``probs`` float ``(N, C, H, W)`` in [0, 1], ``targets`` binary, same shape."""
        probs = np.asarray(probs, dtype=np.float32)
        targets = np.asarray(targets)
        if probs.shape != targets.shape or probs.ndim != 4:
            raise ValueError(f"probs {probs.shape} and targets {targets.shape} must both be "
                             "(N, C, H, W)")
        binar = probs > self.threshold
        soft = coarsen_targets(torch.as_tensor(np.ascontiguousarray(targets)).float(),
                               self.factor).numpy()
        r = _tile_cross_pearson(box_sums(binar.astype(np.float64), self.box),
                                box_sums(soft, self.box))
        ok = ~np.isnan(r)
        self._r_sum += np.where(ok, r, 0.0).sum(0)
        self._r_n += ok.sum(0)
        c = probs.shape[1]
        b = binar.transpose(1, 0, 2, 3).reshape(c, -1).astype(np.float32)
        t = targets.astype(bool).transpose(1, 0, 2, 3).reshape(c, -1).astype(np.float32)
        self._both += (b @ t.T).astype(np.float64)
        self._pred_pos += b.sum(1, dtype=np.float64)
        self._targ_pos += t.sum(1, dtype=np.float64)

    def result(self) -> SpecificityMatrix:
        """Mean per-tile Pearson and pooled Dice for every (predicted, measured) pair."""
        names = list(self.channels)
        with np.errstate(invalid="ignore", divide="ignore"):
            pearson = np.where(self._r_n > 0, self._r_sum / np.maximum(self._r_n, 1), np.nan)
            denom = self._pred_pos[:, None] + self._targ_pos[None, :]
            dice = np.where(denom > 0, 2 * self._both / denom, np.nan)
        return SpecificityMatrix(pd.DataFrame(pearson, index=names, columns=names),
                                 pd.DataFrame(dice, index=names, columns=names))
