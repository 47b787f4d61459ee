"""Torch stain normalization on the device against the C++ CPU normalizers (the reference)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
import zarr
from scipy import ndimage

import virtime
from virtime import stain
from virtime.simulate.slides import render_he, synthetic_he
from virtime.translation.device_stain import DeviceMacenko, DeviceReinhard, device_normalizer

# A clearly different lab: bluer hematoxylin, more magenta eosin (unit OD vectors).
OTHER_H = np.array([0.70, 0.62, 0.35]) / np.linalg.norm([0.70, 0.62, 0.35])
OTHER_E = np.array([0.10, 0.86, 0.50]) / np.linalg.norm([0.10, 0.86, 0.50])


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Every test here on one intra-op torch thread (tests/conftest.py)."""


def _tile(rng, size, glass=0.3, h_scale=1.0):
    e = ndimage.gaussian_filter(rng.normal(size=(size, size)), 4)
    e = 0.25 + 0.6 * (e - e.min()) / (np.ptp(e) + 1e-12)
    hema = 0.15 * np.ones((size, size))
    yy, xx = np.mgrid[0:size, 0:size]
    for _ in range(size * size // 200):
        cy, cx, r = rng.uniform(0, size), rng.uniform(0, size), rng.uniform(2.5, 6)
        hema[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = rng.uniform(0.8, 1.6) * h_scale
    field = ndimage.gaussian_filter(rng.normal(size=(size, size)), 8)
    on_glass = field < np.quantile(field, glass) if glass > 0 else np.zeros((size, size), bool)
    hema[on_glass] = e[on_glass] = 0.0
    rgb = render_he(hema, e, h_od=OTHER_H, e_od=OTHER_E, background=250.0)
    noise = rng.integers(-2, 3, rgb.shape, dtype=np.int16)
    return np.clip(rgb + noise, 0, 255).astype(np.uint8)


def _batch(rng, size=96):
    tiles = [_tile(rng, size), _tile(rng, size, glass=0.6, h_scale=0.6), _tile(rng, size, glass=0.0)]
    few = np.full((size, size, 3), 250, np.uint8)  # 50 <= tissue pixels < 500: fallback matrix
    few[10:24, 20:34] = _tile(rng, 14, glass=0.0)
    tiles += [few, np.full((size, size, 3), 255, np.uint8),  # white: passes through
              np.tile(np.uint8([150, 90, 170]), (size, size, 1)),  # flat colour
              np.zeros((size, size, 3), np.uint8)]  # black
    return np.stack(tiles)


@pytest.fixture(scope="module")
def reference():
    rgb, _ = synthetic_he(256, 256, mpp=0.5, rng=np.random.default_rng(5))
    return rgb


@pytest.mark.parametrize("name", ["macenko", "reinhard"])
def test_device_normalizer_equals_the_cpu_normalizer(rng, reference, name) -> None:
    host = stain.get_normalizer(name).fit(reference)
    tiles = _batch(rng)
    want, outcomes = host.transform(tiles, return_outcome=True)  # C++, tile by tile
    dev = device_normalizer(host, "cpu")
    assert isinstance(dev, DeviceMacenko if name == "macenko" else DeviceReinhard)
    got, status = dev(torch.from_numpy(tiles))
    assert got.dtype == torch.uint8 and tuple(got.shape) == tiles.shape
    assert status.tolist() == [int(o.status) for o in outcomes]
    expected = {"macenko": [0, 0, 0, 1, 2, 2, 2], "reinhard": [0, 0, 0, 2, 2, 2, 2]}[name]
    assert status.tolist() == expected  # own matrix, fallback and pass-through all exercised
    diff = np.abs(got.numpy().astype(int) - want.astype(int))
    assert diff.max() <= 1
    assert (diff == 0).mean() > 0.999  # the same steps, not merely close
    assert (want[:3] != tiles[:3]).mean() > 0.5  # and the tiles were really recoloured


def test_device_normalizer_chunks_and_none(rng, reference, monkeypatch) -> None:
    from virtime.translation import device_stain

    host = stain.MacenkoNormalizer().fit(reference)
    tiles = _batch(rng, 64)[:4]
    whole, _ = device_normalizer(host, "cpu")(torch.from_numpy(tiles))
    monkeypatch.setattr(device_stain, "_CHUNK_PIXELS", 64 * 64)  # one tile per chunk
    one, _ = device_normalizer(host, "cpu")(torch.from_numpy(tiles))
    assert torch.equal(whole, one)
    assert device_normalizer(None, "cpu") is None
    assert device_normalizer(stain.IdentityNormalizer(), "cpu") is None


def _canvas(result):
    return np.asarray(zarr.open_group(str(result.output_dir / "mif.ome.zarr"), mode="r")["0"][:])


class _Recorder:
    """Wraps an engine and keeps the model inputs of every batch (host and device entry points)."""

    def __init__(self, engine):
        self.engine, self.inputs = engine, []
        self.name, self.precision, self.device = engine.name, engine.precision, engine.device

    def __getattr__(self, key):
        return getattr(self.engine, key)

    def _keep(self, x):
        if len(x) >= 4:  # not the one- or two-window memory probes
            self.inputs.append(x.detach().cpu().numpy().copy() if hasattr(x, "detach")
                               else np.array(x))

    def run(self, batch):
        self._keep(batch)
        return self.engine.run(batch)

    def run_tensor(self, x):
        self._keep(x)
        return self.engine.run_tensor(x)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["macenko", "reinhard"])
def test_device_path_with_normalization_equals_host_path(small_slide, tiny_model, fast_config,
                                                         tmp_path, name) -> None:
    from virtime.engines import create_engine

    def engine():
        return _Recorder(create_engine(tiny_model, backend="torch", device="cpu", window=64,
                                       max_batch=64))

    # Fitted to another lab's appearance, so normalizing the slide's tiles changes them a lot.
    fitted = stain.get_normalizer(name).fit(_tile(np.random.default_rng(3), 256))
    cfg = dataclasses.replace(fast_config, backend="torch", device="cpu", features=False,
                              normalize=fitted)
    runs = {}
    for key, c in (("cpu", cfg), ("dev", dataclasses.replace(cfg, device_path=True)),
                   ("plain", dataclasses.replace(cfg, device_path=True, normalize="none"))):
        eng = engine()
        runs[key] = (virtime.translate(small_slide, tiny_model, tmp_path / key, c, engine=eng),
                     np.concatenate(eng.inputs))
    (cpu, x_cpu), (dev, x_dev), (_, x_plain) = runs["cpu"], runs["dev"], runs["plain"]
    a, b = _canvas(cpu), _canvas(dev)
    assert a.shape == b.shape and np.abs(a.astype(int) - b.astype(int)).max() <= 1
    ta, tb = (pd.read_parquet(r.output_dir / "tiles.parquet") for r in (cpu, dev))
    stats = [c for c in ta.columns if c.endswith((".positive_fraction", ".mean_probability"))]
    assert list(ta["tile"]) == list(tb["tile"]) and len(ta) > 0
    np.testing.assert_allclose(tb[stats].to_numpy(), ta[stats].to_numpy(), atol=1e-5, rtol=0)
    # The model saw the same normalized windows (one grey level = 1/(255·std) <= 0.0175) ...
    assert x_cpu.shape == x_dev.shape
    one_level = 1.0 / (255.0 * 0.224) + 1e-5
    assert np.abs(x_cpu - x_dev).max() <= one_level
    # ... and normalization really changed them.
    assert np.abs(x_plain - x_cpu).max() > 20 * one_level


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["macenko", "reinhard"])
def test_cuda_device_normalizer_equals_the_cpu_normalizer(rng, reference, name) -> None:
    host = stain.get_normalizer(name).fit(reference)
    tiles = _batch(rng, 256)
    want, outcomes = host.transform(tiles, return_outcome=True)
    got, status = device_normalizer(host, "cuda")(torch.from_numpy(tiles).cuda())
    assert status.cpu().tolist() == [int(o.status) for o in outcomes]
    assert np.abs(got.cpu().numpy().astype(int) - want.astype(int)).max() <= 1
