"""The device path (uint8 up, torch post-processing, pooled uint8 down) against the C++ CPU path."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch
import zarr
from dying_engine import DyingEngine, Interrupt
from pack_reference import packed_nchw

import virtime
from virtime.stitch.windows import plan_windows, pool_weighted, tile_stride, window_weight
from virtime.translation.device_path import DeviceTranslator, add_blocks, use_device_path
from virtime.translation.postprocess import WindowPostprocessor

GEOMETRIES = [  # (tile, window, overlap, factor, tile origins step): aligned, blended, off-grid
    (128, 64, 0, 4, 128),
    (128, 64, 16, 4, 112),
    (128, 64, 12, 8, 116),  # tiles at x = 116·i: off the 8-px canvas grid
    (128, 64, 0, 3, 128),  # windows not a multiple of the factor: nothing pools in the C++ pass
]


@pytest.fixture(autouse=True)
def _one_torch_thread(one_torch_thread):
    """One intra-op thread: on a shared 2-core runner, torch's default oversubscribes (8x slower)."""


def _engine(model, **kw):
    from virtime.engines import create_engine

    return create_engine(model, backend="torch", device="cpu", window=64, max_batch=64, **kw)


@pytest.mark.parametrize(("tile", "window", "overlap", "factor", "step"), GEOMETRIES)
def test_device_translator_matches_the_fused_cpu_pass(tiny_model, rng, tile, window, overlap,
                                                      factor, step) -> None:
    origins = plan_windows(tile, window, overlap)
    weight = window_weight(window, overlap)
    core = tile_stride(tile, overlap)
    n, k = 3, len(origins)
    rgb = rng.integers(0, 256, (n, tile, tile, 3), dtype=np.uint8)
    tile_xy = np.array([[step * i, step * (i % 2)] for i in range(n)], dtype=np.int64)
    engine = _engine(tiny_model)
    dev = DeviceTranslator(engine, weight, factor, origins, tile, core)
    # Normalization and the window split on the device equal the C++ packer's float32 order of
    # operations (tests/core/test_batcher.py holds the packer to the same reference), bit for bit.
    packed = packed_nchw(rgb)
    cpu_windows = np.stack([packed[:, :, y : y + window, x : x + window] for x, y in origins],
                           axis=1).reshape(n * k, 3, window, window)
    x = dev.prepare(torch.from_numpy(rgb))
    assert x.is_contiguous(memory_format=torch.channels_last)
    np.testing.assert_array_equal(x.numpy(), cpu_windows)
    res = dev.submit(rgb, tile_xy).result()
    logits = engine.run(cpu_windows)
    post = WindowPostprocessor(weight, factor, origins, tile, core)
    ref = post.process(logits)
    np.testing.assert_allclose(res.positive_fraction, ref.positive_fraction, atol=1e-5, rtol=0)
    np.testing.assert_allclose(res.mean_probability, ref.mean_probability, atol=1e-5, rtol=0)
    probs = 1 / (1 + np.exp(-logits.astype(np.float64)))
    for j, (q, ox, oy, ws) in enumerate(res.blocks):
        i, jj = divmod(j, k)
        wx, wy = tile_xy[i] + origins[jj]
        wp_ref, ws_ref, ox_ref, oy_ref = pool_weighted(probs[j], weight, factor, wx, wy)
        assert (ox, oy) == (ox_ref, oy_ref)
        np.testing.assert_allclose(ws, ws_ref, rtol=1e-6)
        expected = np.floor(255 * wp_ref / ws_ref + 0.5)
        assert np.abs(q.astype(float) - expected).max() <= 1
        assert q.nbytes == 23 * ws.size  # uint8 blocks are all that comes back per window


def test_device_path_choice() -> None:
    class E:
        device = "cuda:0"

    cfg = virtime.TranslateConfig()
    assert use_device_path(E(), cfg)
    E.device = "cpu"
    assert not use_device_path(E(), cfg)
    assert use_device_path(E(), dataclasses.replace(cfg, device_path=True))
    E.device = "cuda:0"
    assert not use_device_path(E(), dataclasses.replace(cfg, device_path=False))


def _canvas(result):
    return np.asarray(zarr.open_group(str(result.output_dir / "mif.ome.zarr"), mode="r")["0"][:])


@pytest.mark.slow
@pytest.mark.parametrize(("overlap", "output_mpp", "features"), [(0, 2.0, True), (12, 4.0, False)])
def test_translate_device_path_equals_cpu_path(small_slide, tiny_model, fast_config, tmp_path,
                                               overlap, output_mpp, features) -> None:
    cfg = dataclasses.replace(fast_config, backend="torch", device="cpu", overlap=overlap,
                              output_mpp=output_mpp, features=features)
    cpu = virtime.translate(small_slide, tiny_model, tmp_path / "cpu", cfg)
    dev = virtime.translate(small_slide, tiny_model, tmp_path / "dev",
                            dataclasses.replace(cfg, device_path=True))
    a, b = _canvas(cpu), _canvas(dev)
    assert a.shape == b.shape and np.abs(a.astype(int) - b.astype(int)).max() <= 1
    ta = pd.read_parquet(cpu.output_dir / "tiles.parquet")
    tb = pd.read_parquet(dev.output_dir / "tiles.parquet")
    assert list(ta["tile"]) == list(tb["tile"]) and len(ta) > 0
    stats = [c for c in ta.columns if c.endswith((".positive_fraction", ".mean_probability"))]
    np.testing.assert_allclose(tb[stats].to_numpy(), ta[stats].to_numpy(), atol=1e-5, rtol=0)
    if features:
        fa = pd.read_parquet(cpu.output_dir / "features.parquet")
        fb = pd.read_parquet(dev.output_dir / "features.parquet")
        assert list(fa.columns) == list(fb.columns)
        num = fa.select_dtypes("number").columns
        np.testing.assert_allclose(fb[num].to_numpy(float), fa[num].to_numpy(float), rtol=0.02,
                                   atol=0.02)
    timeline = json.loads((dev.output_dir / "summary.json").read_text())["timeline"]
    assert set(timeline["stages"]) == {"read", "upload", "compute", "postprocess", "download",
                                       "write"}
    assert timeline["stages"]["compute"]["busy_s"] > 0 and timeline["bound_by"] is not None
    assert "timeline" in json.loads((cpu.output_dir / "summary.json").read_text())


@pytest.fixture(scope="module")
def tall_slide(tmp_path_factory):
    from virtime.simulate.slides import make_slide

    return make_slide(tmp_path_factory.mktemp("tall") / "tall.svs", 384, 2304, mpp=0.5, seed=12)


@pytest.mark.slow
def test_interrupted_device_path_run_resumes(tall_slide, tiny_model, fast_config, tmp_path):
    cfg = dataclasses.replace(fast_config, backend="torch", device="cpu", device_path=True,
                              features=False)
    reference = virtime.translate(tall_slide, tiny_model, tmp_path / "ref", cfg)
    with pytest.raises(Interrupt):
        virtime.translate(tall_slide, tiny_model, tmp_path / "cut", cfg,
                          engine=DyingEngine(_engine(tiny_model), calls=8, method="run_tensor"))
    cut = tmp_path / "cut" / "tall"
    bands = json.loads((cut / "mif.ome.zarr.manifest.json").read_text())["stages"]
    assert bands.get("level0_bands")  # stopped after finished bands: there is something to resume
    resumed = virtime.translate(tall_slide, tiny_model, tmp_path / "cut", cfg)
    assert not resumed.skipped
    np.testing.assert_array_equal(_canvas(reference), _canvas(resumed))
    pd.testing.assert_frame_equal(pd.read_parquet(reference.output_dir / "tiles.parquet"),
                                  pd.read_parquet(resumed.output_dir / "tiles.parquet"))


# -- on a GPU ----------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize(("tile", "window", "overlap", "factor", "step"), GEOMETRIES)
def test_cuda_device_translator_matches_cpu(tiny_model, rng, tile, window, overlap, factor,
                                            step) -> None:
    from virtime.engines import create_engine

    origins = plan_windows(tile, window, overlap)
    weight = window_weight(window, overlap)
    core = tile_stride(tile, overlap)
    rgb = rng.integers(0, 256, (4, tile, tile, 3), dtype=np.uint8)
    tile_xy = np.array([[step * i, 0] for i in range(4)], dtype=np.int64)
    cpu = DeviceTranslator(_engine(tiny_model, channels_last=True), weight, factor, origins, tile,
                           core).submit(rgb, tile_xy).result()
    eng = create_engine(tiny_model, backend="torch", device="cuda", window=window, tf32=False)
    gpu_t = DeviceTranslator(eng, weight, factor, origins, tile, core)
    # the device normalization equals the C++ packer's (two roundings on both sides)
    x = gpu_t.prepare(torch.from_numpy(rgb).cuda())
    packed = torch.from_numpy(packed_nchw(rgb))
    ref_windows = torch.stack([packed[:, :, y : y + window, xx : xx + window]
                               for xx, y in origins], 1).reshape(x.shape)
    torch.testing.assert_close(x.cpu(), ref_windows, rtol=0, atol=0)
    gpu = gpu_t.submit(rgb, tile_xy).result()
    np.testing.assert_allclose(gpu.positive_fraction, cpu.positive_fraction, atol=2e-3)
    np.testing.assert_allclose(gpu.mean_probability, cpu.mean_probability, atol=1e-4)
    for (qa, *oa), (qb, *ob) in zip(gpu.blocks, cpu.blocks):
        assert oa[:2] == ob[:2]
        assert np.abs(qa.astype(int) - qb.astype(int)).max() <= 1
    # torch post-processing on the GPU against the fused C++ pass over the same logits
    logits = eng.run_tensor(x)
    kern = WindowPostprocessor(weight, factor, origins, tile, core).process(
        logits.float().cpu().numpy())
    _, pos, psum = gpu_t.postprocess(logits, tile_xy)
    area = core * core
    torch.testing.assert_close(psum.cpu() / area, torch.from_numpy(kern.mean_probability),
                               atol=1e-5, rtol=0)
    torch.testing.assert_close(pos.cpu().double() / area,
                               torch.from_numpy(kern.positive_fraction), atol=1e-4, rtol=0)


@pytest.mark.gpu
def test_cuda_translate_device_path_equals_cpu_path(small_slide, tiny_model, fast_config,
                                                    tmp_path) -> None:
    cfg = dataclasses.replace(fast_config, backend="torch", overlap=16, features=False)
    cpu = virtime.translate(small_slide, tiny_model, tmp_path / "cpu",
                            dataclasses.replace(cfg, device="cpu"))
    gpu = virtime.translate(small_slide, tiny_model, tmp_path / "gpu",
                            dataclasses.replace(cfg, device="cuda",
                                                engine_options={"tf32": False}))
    assert gpu.record["device"].startswith("cuda")
    assert np.abs(_canvas(cpu).astype(int) - _canvas(gpu).astype(int)).max() <= 1
    ta = pd.read_parquet(cpu.output_dir / "tiles.parquet")
    tb = pd.read_parquet(gpu.output_dir / "tiles.parquet")
    mean = [c for c in ta.columns if c.endswith(".mean_probability")]
    np.testing.assert_allclose(tb[mean].to_numpy(), ta[mean].to_numpy(), atol=1e-4)
    assert gpu.record["timeline"]["clock"].startswith("cuda")


def test_add_blocks_reproduces_exact_ratio_without_overlap(tmp_path) -> None:
    from virtime.stitch.canvas import StreamingCanvas
    from virtime.translation.device_path import DeviceBatchResult

    q = np.arange(23 * 4, dtype=np.uint8).reshape(23, 2, 2)
    ws = np.full((2, 2), 16.0, np.float32)
    canvas = StreamingCanvas(tmp_path / "c.zarr", (2, 2), factor=4, mpp=2.0, name="c")
    add_blocks(canvas, DeviceBatchResult([(q, 0, 0, ws)], np.zeros((1, 23)), np.zeros((1, 23))))
    canvas.close()
    got = np.asarray(zarr.open_group(str(tmp_path / "c.zarr"), mode="r")["0"][:])
    np.testing.assert_array_equal(got, q)
