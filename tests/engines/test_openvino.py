"""The OpenVINO engine (fp32 parity with torch, its verified cache), the int8 precision rules and
``backend="auto"``'s measured choice on a CPU."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

pytest.importorskip("openvino")

from virtime.engines import create_engine  # noqa: E402
from virtime.engines.cpu_choice import measured_cpu_engine  # noqa: E402
from virtime.engines.engine_cache import sidecar_path, verify_entry  # noqa: E402
from virtime.errors import InvalidArgumentError  # noqa: E402


def _relative_error(y: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(y - ref).max() / np.abs(ref).max())


def test_openvino_fp32_equals_torch(tiny_model, batch, ref, tmp_path) -> None:
    expected = ref(tiny_model, batch)
    eng = create_engine(tiny_model, backend="openvino", cache_dir=tmp_path, window=32, max_batch=3)
    y = eng.run(batch)  # 7 windows in chunks of 3: the remainder path too
    assert eng.name == "openvino" and y.dtype == np.float32 and y.shape == expected.shape
    assert _relative_error(y, expected) < 1e-4


def test_openvino_streams_split_the_batch(tiny_model, batch, ref, tmp_path) -> None:
    """Two streams: every chunk (3, 3, 1 windows) split across parallel requests, equal to torch
    and to one stream; compiled into its own cache entry; more streams than threads refused."""
    from virtime.errors import InvalidArgumentError

    expected = ref(tiny_model, batch)
    one = create_engine(tiny_model, backend="openvino", cache_dir=tmp_path, window=32,
                        max_batch=3, threads=2, streams=1)
    two = create_engine(tiny_model, backend="openvino", cache_dir=tmp_path, window=32,
                        max_batch=3, threads=2)  # the default: two streams for two threads
    y1, y2 = one.run(batch), two.run(batch)
    assert two.streams == 2 and y2.shape == expected.shape and y2.dtype == np.float32
    assert _relative_error(y2, expected) < 1e-4
    assert _relative_error(y2, y1) < 1e-5
    assert one.blob_path != two.blob_path and two.blob_path.name.endswith("-s2.blob")
    with pytest.raises(InvalidArgumentError, match="streams"):
        create_engine(tiny_model, backend="openvino", cache_dir=tmp_path, window=32, threads=1,
                      streams=2)
    alone = create_engine(tiny_model, backend="openvino", cache_dir=tmp_path, window=32, threads=1)
    assert alone.streams == 1  # the default never asks for more streams than threads


def test_openvino_fp32_equals_torch_on_gigatime(tmp_path, rng) -> None:
    from tiny_models import TINY_FILTERS

    from virtime.models import GigaTIME

    torch.manual_seed(3)
    model = GigaTIME(filters=list(TINY_FILTERS)).eval()
    x = rng.standard_normal((2, 3, 64, 64)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    eng = create_engine(model, backend="openvino", cache_dir=tmp_path, window=64)
    assert _relative_error(eng.run(x), expected) < 1e-4


@pytest.mark.slow
def test_openvino_fp32_equals_torch_on_flash(tmp_path, rng) -> None:
    from tiny_models import tiny_flash

    model = tiny_flash(5).eval()  # a ViT: its windows are the configured 256 px
    x = rng.standard_normal((2, 3, 256, 256)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    eng = create_engine(model, backend="openvino", cache_dir=tmp_path, window=256)
    assert _relative_error(eng.run(x), expected) < 1e-4


def test_tampered_cache_entry_is_rebuilt(tiny_model, batch, ref, tmp_path, caplog) -> None:
    first = create_engine(tiny_model, backend="openvino", cache_dir=tmp_path, window=32)
    blob = first.blob_path
    built_from = json.loads(sidecar_path(blob).read_text())["built_from"]
    assert verify_entry(blob, built_from) is None
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the middle of the compiled model
    blob.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        again = create_engine(tiny_model, backend="openvino", cache_dir=tmp_path, window=32)
    assert "invalid" in caplog.text and "sha256" in caplog.text and str(blob) in caplog.text
    assert verify_entry(blob, built_from) is None  # rebuilt and vouched for again
    assert _relative_error(again.run(batch), ref(tiny_model, batch)) < 1e-4


def test_int8_refused_on_backends_without_it(tiny_model, tmp_path) -> None:
    for backend in ("onnxruntime", "torch", "tensorrt"):
        with pytest.raises(InvalidArgumentError, match=f"the {backend} backend cannot run INT8"):
            create_engine(tiny_model, backend=backend, precision="int8", cache_dir=tmp_path)
    with pytest.raises(InvalidArgumentError, match="fp32 weights; --precision int8 needs"):
        create_engine(tiny_model, backend="openvino", precision="int8", cache_dir=tmp_path)


class _Engine:
    def __init__(self, name: str) -> None:
        self.name = name
        self.closed = False

    def close(self) -> None:
        self.closed = True


def test_auto_on_cpu_keeps_the_measured_fastest(tiny_model, tmp_path, caplog) -> None:
    planted = {"onnxruntime": 2.0, "openvino": 5.0, "torch": 1.0}
    built: list[str] = []
    measured: list[dict] = []

    def build(name: str) -> _Engine:
        built.append(name)
        return _Engine(name)

    def measure(engines: dict, window: int) -> dict[str, float]:
        measured.append(engines)
        return {n: planted[n] for n in engines}

    kwargs = dict(cache_dir=tmp_path, window=32, precision="fp32", threads=2, measure=measure)
    with caplog.at_level(logging.INFO):
        eng = measured_cpu_engine(tiny_model, list(planted), build, **kwargs)
    assert eng.name == "openvino"
    assert [e.closed for e in measured[0].values()] == [True, False, True]  # losers closed
    assert "backend auto -> openvino" in caplog.text and "5 windows/s" in caplog.text
    (record,) = (tmp_path / "auto").glob("*.json")
    assert json.loads(record.read_text())["windows_per_s"] == planted
    built.clear()
    again = measured_cpu_engine(tiny_model, list(planted), build, **kwargs)
    assert again.name == "openvino" and built == ["openvino"] and len(measured) == 1  # cached
    other = torch.nn.Conv2d(3, 23, 1)  # another model: measured again
    measured_cpu_engine(other, list(planted), build, **kwargs)
    assert len(measured) == 2


def test_auto_on_cpu_measures_real_engines(tiny_model, batch, ref, tmp_path, caplog) -> None:
    with caplog.at_level(logging.INFO):
        eng = create_engine(tiny_model, backend="auto", device="cpu", cache_dir=tmp_path,
                            window=32)
    assert "fastest on this CPU" in caplog.text
    (record,) = (tmp_path / "auto").glob("*.json")
    rates = json.loads(record.read_text())["windows_per_s"]
    assert set(rates) == {"onnxruntime", "openvino", "torch"}
    assert eng.name == max(rates, key=rates.get)
    assert _relative_error(eng.run(batch), ref(tiny_model, batch)) < 1e-4


def test_selection_table_offers_openvino_on_cpu_and_for_int8() -> None:
    from virtime.engines.selection import Capabilities, choose_backends

    cpu = choose_backends(Capabilities(openvino=True), "fp32")
    assert cpu.candidates == ("onnxruntime", "openvino", "torch")
    assert choose_backends(Capabilities(), "fp32").candidates == ("onnxruntime", "torch")
    gpu = Capabilities(cuda_capability=(9, 0), openvino=True)
    assert choose_backends(gpu, "int8").candidates == ("openvino",)
    assert "openvino" not in choose_backends(gpu, "fp32").candidates


def test_tile_encoder_runs_on_openvino(tmp_path, rng) -> None:
    """The Prov-GigaPath tile encoder's exported graph ((N,3,224,224) -> (N,D,1,1)) runs through
    the embedding pipeline's engine factory on OpenVINO, equal to torch."""
    from tiny_models import tiny_encoders

    from virtime.embed import EmbedConfig
    from virtime.embed.pipeline import make_engine
    from virtime.embed.tile_encoder import TileEmbeddingHead

    tile, _ = tiny_encoders(2)
    x = rng.standard_normal((3, 3, 224, 224)).astype(np.float32)
    with torch.no_grad():
        expected = TileEmbeddingHead(tile)(torch.from_numpy(x)).numpy()
    config = EmbedConfig(backend="openvino", device="cpu", cache_dir=str(tmp_path), batch_size=2)
    eng = make_engine(tile, config, "cpu")
    assert eng.name == "openvino"
    assert _relative_error(eng.run(x), expected) < 1e-4
