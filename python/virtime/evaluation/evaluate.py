"""Evaluating a translator on paired tiles, beside a trivial baseline.

The baseline predicts each channel's mean prevalence everywhere (probability = the fraction of
positive pixels of that channel in the reference tiles). Scored by the same protocol
(:mod:`virtime.evaluation.metrics`), a constant prediction gets Pearson 0 on every tile that
counts; its Dice is non-zero only for channels with prevalence > 0.5. It is there so that a
model's numbers always stand next to what knowing nothing but the channel frequencies gives.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from virtime.errors import InputDataError
from virtime.evaluation.metrics import EvalAccumulator
from virtime.evaluation.specificity import SpecificityAccumulator, SpecificityMatrix

__all__ = ["EvaluationResult", "predict_probs", "evaluate", "prevalence", "write_report"]

logger = logging.getLogger(__name__)


@dataclass
class EvaluationResult:
    """Per-channel table (``summary``) with model and baseline columns, and the tile count."""

    summary: pd.DataFrame
    n_tiles: int
    specificity: SpecificityMatrix | None = None

    @property
    def mean_pearson(self) -> float:
        """Mean over the 21 protein channels of the model's Pearson (NaN channels ignored)."""
        from virtime.channels import PROTEIN_CHANNELS

        s = self.summary.set_index("channel").loc[list(PROTEIN_CHANNELS), "pearson"]
        return float(np.nanmean(s.to_numpy())) if s.notna().any() else float("nan")

    def pearson_dict(self) -> dict[str, float]:
        return dict(zip(self.summary.channel, self.summary.pearson.astype(float)))


@torch.no_grad()
def predict_probs(model: nn.Module, rgb: np.ndarray, *, window: int = 256,
                  device: str | torch.device = "cpu") -> np.ndarray:
    """Sigmoid probabilities ``(N, C, H, W)`` of uint8 tiles ``(N, H, W, 3)``.

    Tiles that are a whole number of windows are cut into windows (as GigaTIME runs them);
    other sizes must be multiples of the model's down-sampling and are run whole.
    """
    from virtime.models.preprocess import to_model_input

    card = getattr(model, "card", None)
    norm = card.normalization if card is not None else {}
    n, h, w, _ = rgb.shape
    x = to_model_input(rgb, **({"mean": norm["mean"], "std": norm["std"]} if norm else {}),
                       device=device)
    if h % window == 0 and w % window == 0 and (h, w) != (window, window):
        gy, gx = h // window, w // window
        x = x.reshape(n, 3, gy, window, gx, window).permute(0, 2, 4, 1, 3, 5)
        y = torch.sigmoid(model(x.reshape(-1, 3, window, window)).float())
        c = y.shape[1]
        y = y.reshape(n, gy, gx, c, window, window).permute(0, 3, 1, 4, 2, 5)
        return y.reshape(n, c, h, w).cpu().numpy()
    return torch.sigmoid(model(x).float()).cpu().numpy()


def prevalence(pairs_dir: str | os.PathLike[str], index: pd.DataFrame) -> np.ndarray:
    """Fraction of positive pixels per channel over the tiles of ``index``."""
    from virtime.training.data import load_pair

    pos, pix = None, 0
    for _, row in index.iterrows():
        _, t = load_pair(pairs_dir, row)
        s = t.reshape(t.shape[0], -1).sum(1)
        pos = s if pos is None else pos + s
        pix += t.shape[1] * t.shape[2]
    if pos is None:
        raise InputDataError(f"{pairs_dir}: no tiles to compute prevalence from")
    return pos / pix


def evaluate(
    model: nn.Module,
    pairs_dir: str | os.PathLike[str],
    *,
    split: str = "val",
    val_fraction: float = 0.2,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    show_progress: bool = True,
) -> EvaluationResult:
    """GigaTIME-protocol evaluation of ``model`` on a pairs folder, with the prevalence baseline.

    ``split="val"`` evaluates the validation slides of :func:`split_by_slide` (the baseline's
    prevalence comes from the training slides); ``split="all"`` evaluates every tile (the
    prevalence then comes from those same tiles, which flatters the baseline).
    """
    from virtime._progress import progress
    from virtime.training.data import load_pair, read_index, split_by_slide

    index = read_index(pairs_dir)
    if split == "val":
        ref, index = split_by_slide(index, val_fraction)
        if index.empty:
            raise InputDataError(f"{pairs_dir}: no validation slides (need >= 2 slides)")
    elif split == "all":
        ref = index
    else:
        raise InputDataError(f"split must be 'val' or 'all', got {split!r}")
    base_p = prevalence(pairs_dir, ref)
    window = int(getattr(getattr(model, "card", None), "window", 256) or 256)
    model.eval()
    acc_model, acc_base = EvalAccumulator(), EvalAccumulator()
    acc_cross = SpecificityAccumulator()
    rows = list(index.iterrows())
    with progress(total=len(rows), desc="evaluate", unit="tile", enabled=show_progress) as bar:
        for start in range(0, len(rows), batch_size):
            batch = [load_pair(pairs_dir, r) for _, r in rows[start:start + batch_size]]
            shapes = {b[0].shape for b in batch}
            groups = [batch] if len(shapes) == 1 else [[b] for b in batch]
            for g in groups:
                rgb = np.stack([b[0] for b in g])
                tg = np.stack([b[1] for b in g])
                probs = predict_probs(model, rgb, window=window, device=device)
                acc_model.update(probs, tg)
                acc_cross.update(probs, tg)
                acc_base.update(np.broadcast_to(base_p[None, :, None, None], tg.shape), tg)
            bar.update(len(batch))
    s = acc_model.summary()
    b = acc_base.summary()
    for col in ("pearson", "dice", "iou"):
        s[f"baseline_{col}"] = b[col].to_numpy()
    s["baseline_prevalence"] = base_p
    result = EvaluationResult(s, len(rows), acc_cross.result())
    logger.info("evaluated %d tiles: mean protein Pearson %.3f", len(rows), result.mean_pearson)
    return result


def write_report(result: EvaluationResult, output: str | os.PathLike[str],
                 title: str = "per-channel Pearson") -> tuple[Path, Path]:
    """Writes ``metrics.csv``, ``pearson.png`` (bars per channel, model vs baseline) and the
    specificity matrices (``specificity_pearson.csv``, ``specificity_dice.csv``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from virtime.io import atomic_path, atomic_write_bytes

    out_dir = Path(output)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv = out_dir / "metrics.csv"
    atomic_write_bytes(csv, result.summary.to_csv(index=False).encode())
    if result.specificity is not None:
        result.specificity.write(out_dir)
    s = result.summary
    xs = np.arange(len(s))
    fig, ax = plt.subplots(figsize=(10, 3.6))
    ax.bar(xs - 0.2, s.pearson.fillna(0), 0.4, label="model")
    ax.bar(xs + 0.2, s.baseline_pearson.fillna(0), 0.4, label="mean-prevalence baseline")
    ax.set_xticks(xs, s.channel, rotation=60, ha="right")
    ax.set_ylabel("Pearson (8x8 boxes)")
    ax.set_title(f"{title} ({result.n_tiles} tiles)")
    ax.legend(frameon=False)
    fig.tight_layout()
    png = out_dir / "pearson.png"
    try:
        with atomic_path(png) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
    finally:
        plt.close(fig)
    return csv, png
