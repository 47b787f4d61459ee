"""GigaTIME-Flash through the engines: ONNX export, ONNX Runtime fp32/fp16, TensorRT-RTX build."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from tiny_models import tiny_flash

from virtime.engines import create_engine, export_onnx
from virtime.models import GigaTIMEFlash
from virtime.models.lora import LoRALinear

W = 256


@pytest.fixture(scope="module")
def flash():
    """Reduced widths (official key pattern), non-zero LoRA B so the adapters are exercised."""
    return tiny_flash(3, pos_embed_std=0.5).eval()


@pytest.fixture(scope="module")
def windows():
    return np.random.default_rng(7).standard_normal((2, 3, W, W)).astype(np.float32)


def _torch(model, x):
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def test_export_folds_the_position_resize(flash, tmp_path):
    path = export_onnx(flash, tmp_path / "flash.onnx", window=W)
    graph = onnx.load(str(path)).graph
    modes = [a.s.decode() for n in graph.node if n.op_type == "Resize"
             for a in n.attribute if a.name == "mode"]
    assert modes and set(modes) == {"linear"}  # decoder up-sampling only, no bicubic
    assert flash.training is False and flash.encoder.folded == (16, 16)  # caller's model untouched
    # LoRA merged into qkv/proj: no adapter weights or their MatMuls left in the graph
    assert not [i.name for i in graph.initializer if "lora" in i.name.lower()]
    assert not [n.name for n in graph.node if "lora" in n.name.lower()]
    assert any(isinstance(m, LoRALinear) for m in flash.modules())  # the caller's still has them


@pytest.mark.slow
def test_onnxruntime_fp32_and_fp16(flash, windows, tmp_path):
    expected = _torch(flash, windows)
    y32 = create_engine(flash, backend="onnxruntime", cache_dir=tmp_path, window=W,
                        max_batch=1, threads=1).run(windows)  # two engine calls
    assert y32.shape == (2, 23, W, W)
    assert np.abs(y32 - expected).max() < 1e-4
    y16 = create_engine(flash, backend="onnxruntime", precision="fp16", cache_dir=tmp_path,
                        window=W, max_batch=2, threads=1).run(windows)
    err = np.abs(y16 - expected).max() / np.abs(expected).max()
    assert 0 < err < 1e-2


@pytest.mark.slow
def test_tensorrt_rtx_builds_strongly_typed_fp16(flash, tmp_path):
    """Attention, LayerNorm and the folded position grid build in TensorRT-RTX (no GPU needed);
    a 64-px window keeps the build short (the fixed-window graph is the same apart from sizes)."""
    pytest.importorskip("tensorrt_rtx")
    from virtime.engines import tensorrt_engine as te

    small = GigaTIMEFlash(**{**flash.config, "window": 64, "output_size": None})
    small.load_state_dict(flash.state_dict())
    path = te.build_engine(small.eval(), cache_dir=tmp_path, precision="fp16", max_batch=2,
                           window=64, flavour="tensorrt-rtx")
    assert path.stat().st_size > 10_000
