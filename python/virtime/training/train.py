"""Training a translator on paired tiles, the GigaTIME way, with resumable checkpoints.

Objective :func:`virtime.training.losses.gigatime_loss`; Adam with a per-step cosine schedule
from ``lr`` to ``lr_min``; augmentations: random crops, flips, 90-degree rotations and stain
jitter (per-sample scale and shift of the optical density of each RGB channel); mixed precision
on CUDA. After every epoch ``RUN_DIR/checkpoint.pt`` (model, optimizer, schedule, history) is
replaced atomically, so an interrupted run resumes from its last finished epoch; the model with
the best mean validation Pearson (21 protein channels) is written as ``RUN_DIR/best.safetensors``
with its model card ``best.json`` (per-channel Pearson and confidence tiers included).
"""

from __future__ import annotations

import io
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from virtime.errors import CheckpointError, InputDataError

__all__ = ["TrainConfig", "TrainResult", "train", "stain_jitter"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run (stored in the checkpoint; a resume must match them)."""

    architecture: str = "gigatime"
    filters: tuple[int, ...] = (8, 16, 32, 64, 128)
    epochs: int = 20
    batch_size: int = 8
    crop: int = 256  # training crop (the model is fully convolutional)
    window: int = 256  # inference window recorded in the model card
    lr: float = 1e-3
    lr_min: float = 1e-5
    val_fraction: float = 0.2
    steps_per_epoch: int | None = None  # None: one pass over the training tiles
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    stain_jitter: float = 0.08
    threads: int | None = None
    input_mpp: float | None = None  # default: from pairs.json / index.csv
    extra: dict[str, Any] = field(default_factory=dict)

    def model_config(self) -> dict[str, Any]:
        if self.architecture == "gigatime":
            return {"filters": list(self.filters)}
        return dict(self.extra.get("model_config", {}))


@dataclass
class TrainResult:
    """History (one row per epoch), the best checkpoint path and its mean validation Pearson."""

    history: pd.DataFrame
    best_path: Path | None
    best_score: float


def stain_jitter(x: torch.Tensor, strength: float, gen: torch.Generator) -> torch.Tensor:
    """Per-sample random scale (1 +- strength) and shift (+- strength/2) of RGB optical density.

    ``x`` is float RGB in [0, 255] ``(N, 3, H, W)``; returns the same layout.
    """
    n = x.shape[0]
    od = -torch.log((x + 1.0) / 256.0)
    scale = 1 + strength * (2 * torch.rand(n, 3, 1, 1, generator=gen) - 1)
    shift = strength / 2 * (2 * torch.rand(n, 3, 1, 1, generator=gen) - 1)
    od = od * scale.to(x.device) + shift.to(x.device)
    return (256.0 * torch.exp(-od.clamp_min(0)) - 1.0).clamp(0, 255)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _normalize(x: torch.Tensor) -> torch.Tensor:
    from virtime.models.card import IMAGENET_MEAN, IMAGENET_STD

    m = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x / 255.0 - m) / s


def _save_atomic(obj: Any, path: Path) -> None:
    from virtime.io import atomic_write_bytes

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def _config_key(cfg: TrainConfig) -> dict[str, Any]:
    d = asdict(cfg)
    return {k: d[k] for k in ("architecture", "filters", "crop", "batch_size", "lr", "lr_min",
                              "epochs", "seed", "val_fraction")}


def train(
    pairs_dir: str | os.PathLike[str],
    run_dir: str | os.PathLike[str],
    config: TrainConfig = TrainConfig(),
    *,
    resume: bool = True,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    show_progress: bool = True,
) -> TrainResult:
    """Trains on ``pairs_dir`` (format of :mod:`virtime.training.data`) into ``run_dir``.

    With ``resume`` (default) an existing ``run_dir/checkpoint.pt`` of the same configuration is
    continued from its last finished epoch. ``on_epoch`` receives each epoch's metrics.
    """
    from virtime._progress import progress
    from virtime.evaluation.evaluate import evaluate
    from virtime.models.checkpoints import save
    from virtime.models.registry import build_model
    from virtime.training.data import PairDataset, read_index, split_by_slide
    from virtime.training.losses import gigatime_loss

    pairs_dir, run_dir = Path(pairs_dir), Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if config.threads:
        torch.set_num_threads(config.threads)
    device = _device(config.device)
    use_amp = config.amp and device.type == "cuda"
    index = read_index(pairs_dir)
    train_idx, val_idx = split_by_slide(index, config.val_fraction)
    if train_idx.empty or val_idx.empty:
        raise InputDataError(f"{pairs_dir}: need tiles from >= 2 slides for a slide-level split")
    mpp = config.input_mpp or (float(index["mpp"].iloc[0]) if "mpp" in index else 0.25)
    torch.manual_seed(config.seed)
    model = build_model(config.architecture, config.model_config()).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    steps = config.steps_per_epoch or math.ceil(len(train_idx) / config.batch_size)
    total = steps * config.epochs
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(total, 1),
                                                       eta_min=config.lr_min)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    gen = torch.Generator().manual_seed(config.seed)
    history: list[dict[str, float]] = []
    start_epoch, best = 0, -math.inf
    ckpt_path = run_dir / "checkpoint.pt"
    if resume and ckpt_path.is_file():
        try:
            state = torch.load(ckpt_path, map_location=device, weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint is one error
            raise CheckpointError(f"{ckpt_path}: cannot resume ({exc})") from exc
        if state.get("config") != _config_key(config):
            raise CheckpointError(f"{ckpt_path}: was written with a different configuration "
                                  f"{state.get('config')}; use another run folder or --restart")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        gen.set_state(state["generator"])
        start_epoch, best, history = int(state["epoch"]), float(state["best"]), list(state["history"])
        logger.info("resuming %s after epoch %d", run_dir, start_epoch)
    train_ds = PairDataset(pairs_dir, train_idx, crop=config.crop, augment=True,
                           seed=config.seed + start_epoch)
    order_rng = np.random.default_rng(config.seed + 1000 * start_epoch)
    for epoch in range(start_epoch, config.epochs):
        model.train()
        t0 = time.perf_counter()
        losses, bces, dices = [], [], []
        with progress(total=steps, desc=f"epoch {epoch + 1}/{config.epochs}", unit="step",
                      enabled=show_progress) as bar:
            order = order_rng.permutation(np.resize(np.arange(len(train_ds)),
                                                    steps * config.batch_size))
            for step in range(steps):
                items = [train_ds[int(i)] for i in order[step * config.batch_size:
                                                           (step + 1) * config.batch_size]]
                rgb = torch.stack([it[0] for it in items]).to(device).permute(0, 3, 1, 2).float()
                tg = torch.stack([it[1] for it in items]).to(device)
                if config.stain_jitter > 0:
                    rgb = stain_jitter(rgb, config.stain_jitter, gen)
                with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                    logits = model(_normalize(rgb))
                loss, parts = gigatime_loss(logits, tg)
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                sched.step()
                losses.append(float(loss.detach()))
                bces.append(parts["bce"])
                dices.append(parts["dice"])
                bar.update(1)
                bar.set_postfix(loss=f"{np.mean(losses):.4f}")
        model.eval()
        from virtime.models.card import ModelCard

        model.card = ModelCard(architecture=config.architecture,  # type: ignore[assignment]
                               config=model.config, input_mpp=mpp, window=config.window)
        ev = evaluate(model, pairs_dir, split="val", val_fraction=config.val_fraction,
                      device=device, show_progress=False)
        score = ev.mean_pearson
        row = {"epoch": epoch + 1, "loss": float(np.mean(losses)), "bce": float(np.mean(bces)),
               "dice": float(np.mean(dices)), "val_pearson": score,
               "val_baseline_pearson": float(np.nanmean(ev.summary.baseline_pearson)),
               "lr": float(sched.get_last_lr()[0]), "seconds": time.perf_counter() - t0}
        history.append(row)
        if math.isfinite(score) and score > best:
            best = score
            card = ModelCard(architecture=config.architecture, config=model.config, input_mpp=mpp,
                             window=config.window)
            card.training = {
                "pairs": str(pairs_dir), "n_train_tiles": int(len(train_idx)),
                "n_val_tiles": int(len(val_idx)),
                "n_train_slides": int(train_idx.slide_id.nunique()),
                "n_val_slides": int(val_idx.slide_id.nunique()), "epochs": epoch + 1,
                "config": {k: (list(v) if isinstance(v, tuple) else v)
                           for k, v in asdict(config).items()},
            }
            card.with_evaluation(ev.pearson_dict(), split="validation slides",
                                 n_tiles=ev.n_tiles, mean_protein_pearson=score,
                                 baseline_pearson=dict(zip(ev.summary.channel,
                                                           ev.summary.baseline_pearson.fillna(0))))
            save(model, run_dir / "best.safetensors", card=card)
        _save_atomic({"model": model.state_dict(), "optimizer": opt.state_dict(),
                      "scheduler": sched.state_dict(), "scaler": scaler.state_dict(),
                      "generator": gen.get_state(), "epoch": epoch + 1, "best": best,
                      "history": history, "config": _config_key(config)}, ckpt_path)
        from virtime.io import atomic_write_bytes

        atomic_write_bytes(run_dir / "history.csv", pd.DataFrame(history).to_csv(index=False).encode())
        logger.info("epoch %d: %s", epoch + 1, row)
        if on_epoch is not None:
            on_epoch(row)
    best_path = run_dir / "best.safetensors"
    return TrainResult(pd.DataFrame(history), best_path if best_path.is_file() else None, best)
