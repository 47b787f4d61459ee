"""Training: the loss falls, interrupted runs resume, the CLI chain and ONNX parity."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from virtime.models import GigaTIME, load
from virtime.training.data import (PairDataset, load_pair, read_index, split_by_slide,
                                   write_simulated_pairs)
from virtime.training.losses import coarsen_targets, gigatime_loss
from virtime.training.train import TrainConfig, train

TINY = (4, 8, 8, 8, 8)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    d = tmp_path_factory.mktemp("pairs")
    write_simulated_pairs(d, 8, size=64, tiles_per_slide=2, seed=5, show_progress=False)
    return d


def test_pairs_format_round_trip(pairs):
    index = read_index(pairs)
    assert len(index) == 8 and index.slide_id.nunique() == 4
    rgb, t = load_pair(pairs, index.iloc[0])
    assert rgb.shape == (64, 64, 3) and t.shape == (23, 64, 64) and t[0].any()
    train_idx, val_idx = split_by_slide(index, 0.25)
    assert set(train_idx.slide_id).isdisjoint(val_idx.slide_id) and len(val_idx) == 2


def test_loss_definition():
    logits = torch.randn(2, 3, 16, 16)
    t = (torch.rand(2, 3, 16, 16) > 0.7).float()
    soft = coarsen_targets(t)
    p = torch.sigmoid(logits)
    bce = -(soft * torch.log(p) + (1 - soft) * torch.log(1 - p)).mean()
    dice = ((2 * (p * soft).sum((0, 2, 3)) + 1) / (p.sum((0, 2, 3)) + soft.sum((0, 2, 3)) + 1))
    loss, _ = gigatime_loss(logits, t)
    assert loss.item() == pytest.approx((0.5 * bce + 1 - dice.mean()).item(), rel=1e-5)


def test_few_steps_lower_the_loss(pairs):
    torch.manual_seed(0)
    ds = PairDataset(pairs, read_index(pairs))
    rgb = torch.stack([ds[i][0] for i in range(4)]).permute(0, 3, 1, 2).float()
    tg = torch.stack([ds[i][1] for i in range(4)])
    x = (rgb / 255 - 0.45) / 0.25
    model = GigaTIME(filters=TINY)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(12):
        loss, _ = gigatime_loss(model(x), tg)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.02


class _Stop(Exception):
    pass


def test_interrupted_training_resumes(pairs, tmp_path):
    cfg = TrainConfig(filters=TINY, epochs=2, batch_size=2, crop=32, window=64,
                      steps_per_epoch=2, val_fraction=0.25, threads=1)

    def stop(row):
        raise _Stop

    with pytest.raises(_Stop):
        train(pairs, tmp_path, cfg, on_epoch=stop, show_progress=False)
    first = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert first["epoch"] == 1
    seen = []
    result = train(pairs, tmp_path, cfg, on_epoch=seen.append, show_progress=False)
    assert [r["epoch"] for r in seen] == [2]  # only the unfinished epoch ran
    assert list(result.history.epoch) == [1, 2]
    assert result.history.loss[0] == first["history"][0]["loss"]
    model = load(tmp_path / "best.safetensors")
    assert model.card.input_mpp == 0.5 and set(model.card.confidence_tiers) == set(
        model.card.evaluation["pearson"])


def test_cli_chain_and_onnx_parity(pairs, tmp_path, capsys):
    ort = pytest.importorskip("onnxruntime")
    from virtime.cli import main

    run = tmp_path / "run"
    assert main(["train", str(pairs), "-o", str(run), "--filters", *map(str, TINY), "--epochs",
                 "1", "--steps-per-epoch", "1", "--batch-size", "2", "--crop", "32",
                 "--window", "64", "--threads", "1", "--quiet"]) == 0
    assert "epoch 1: loss" in capsys.readouterr().out
    assert main(["evaluate", str(pairs), "--weights", str(run / "best.safetensors"), "-o",
                 str(tmp_path / "ev"), "--split", "all", "--quiet"]) == 0
    assert (tmp_path / "ev" / "metrics.csv").is_file() and (tmp_path / "ev" / "pearson.png").is_file()
    onnx_path = tmp_path / "m.onnx"
    assert main(["export", "--weights", str(run / "best.safetensors"), "--onnx",
                 str(onnx_path)]) == 0
    model = load(run / "best.safetensors")
    x = np.random.default_rng(0).standard_normal((3, 3, 64, 64)).astype(np.float32)
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (y,) = sess.run(None, {sess.get_inputs()[0].name: x})  # batch 3: dynamic axis
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    assert np.abs(y - ref).max() < 1e-4
