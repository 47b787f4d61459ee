"""--cells on the device path: each tile's blended probabilities computed on the device and
downloaded as uint8, against the host path (window logits on the host, tile_probabilities, the
collector's uint8 store)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
import zarr

from virtime.cells.collector import tile_probabilities
from virtime.stitch.windows import plan_windows, tile_stride, window_weight
from virtime.translation.device_path import DeviceTranslator


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """One intra-op thread: on a shared 2-core runner, torch's default oversubscribes."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class _LogitEngine:
    """Returns fixed logits, so both paths post-process the very same numbers."""

    device = "cpu"

    def __init__(self, logits: np.ndarray) -> None:
        self.logits = logits

    def run_tensor(self, x):
        assert x.shape[0] == len(self.logits)
        return torch.from_numpy(self.logits.copy())


def _host_u8(logits, origins, weight, tile):
    """What the host path stores: tile_probabilities, then the collector's uint8 encoding."""
    k = len(origins)
    out = []
    for i in range(len(logits) // k):
        p = tile_probabilities(logits[i * k : (i + 1) * k], origins, weight, tile)
        out.append(np.rint(np.clip(p, 0.0, 1.0) * 255.0).astype(np.uint8))
    return np.stack(out)


@pytest.mark.parametrize(("tile", "window", "overlap"), [
    (128, 64, 0),  # official layout: non-overlapping uniform windows
    (128, 64, 16),  # overlapping windows with blend ramps
    (64, 64, 0),  # one window per tile
    (64, 64, 8),  # one window per tile with a ramp: the host takes sigma unweighted
])
def test_device_tile_probabilities_equal_the_host_encoding(rng, tile, window, overlap) -> None:
    origins = plan_windows(tile, window, overlap)
    weight = window_weight(window, overlap)
    n, k = 3, len(origins)
    logits = rng.normal(0.0, 3.0, (n * k, 23, window, window)).astype(np.float32)
    rgb = rng.integers(0, 256, (n, tile, tile, 3), dtype=np.uint8)
    dev = DeviceTranslator(_LogitEngine(logits), weight, 4, origins, tile,
                           tile_stride(tile, overlap))
    dev.emit_tiles = True
    res = dev.submit(rgb, np.array([[i * tile, 0] for i in range(n)])).result()
    assert res.tile_probabilities.dtype == np.uint8
    assert res.tile_probabilities.shape == (n, 23, tile, tile)
    np.testing.assert_array_equal(res.tile_probabilities, _host_u8(logits, origins, weight, tile))
    dev.emit_tiles = False  # and nothing extra is downloaded without cells
    assert dev.submit(rgb, np.zeros((n, 2), np.int64)).result().tile_probabilities is None


def _canvas(result):
    return np.asarray(zarr.open_group(str(result.output_dir / "mif.ome.zarr"), mode="r")["0"][:])


def _match(a: pd.DataFrame, b: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Nearest-centroid pairing of b's cells to a's: (distance, index into b)."""
    from scipy.spatial import cKDTree

    d, j = cKDTree(b[["x", "y"]].to_numpy()).query(a[["x", "y"]].to_numpy())
    return d, j


@pytest.fixture(scope="module")
def cell_slide(tmp_path_factory):
    from virtime.simulate.slides import write_slide
    from virtime.simulate.tissue import render_tissue

    rgb, _, _ = render_tissue((384, 512), mpp=0.5, rng=np.random.default_rng(3))
    return write_slide(tmp_path_factory.mktemp("device-cells") / "s.svs", rgb, 0.5)


@pytest.mark.slow
@pytest.mark.parametrize("overlap", [0, 32])
def test_device_path_cells_equal_the_host_path(cell_slide, tmp_path, overlap) -> None:
    from virtime.cells import read_cells
    from virtime.models import load_demo
    from virtime.translation import TranslateConfig, translate

    cfg = TranslateConfig(tile_size=256, overlap=overlap, show_progress=False, backend="torch",
                          device="cpu", cells=True, batch_size=2, threads=2)
    host = translate(cell_slide, load_demo(), tmp_path / "host", cfg)
    dev = translate(cell_slide, load_demo(), tmp_path / "dev",
                    dataclasses.replace(cfg, device_path=True))
    assert "timeline" in dev.record and set(dev.record["timeline"]["stages"]) >= {"download"}
    a, b = _canvas(host), _canvas(dev)
    assert a.shape == b.shape and np.abs(a.astype(int) - b.astype(int)).max() <= 1
    ca, cb = read_cells(host.output_dir), read_cells(dev.output_dir)
    assert len(ca) > 50 and len(cb) == len(ca)
    assert sorted(ca["tile"]) == sorted(cb["tile"])
    d, j = _match(ca, cb)
    assert d.max() <= 0.5 and len(set(j.tolist())) == len(ca)  # one-to-one, within half a pixel
    means = [c for c in ca.columns if c.endswith(".mean")]
    assert means
    diff = np.abs(ca[means].to_numpy(float) - cb.iloc[j][means].to_numpy(float))
    assert diff.max() <= 1.0 / 255.0 + 1e-6
    assert (ca["phenotype"].to_numpy() == cb.iloc[j]["phenotype"].to_numpy()).mean() >= 0.99
