"""The pyramid and thumbnail level streamed from the canvas bands equal the ones built from the
finished level 0 (#16.5), including odd sizes, odd chunks and a resumed canvas."""

from __future__ import annotations

import numpy as np
import pytest
from pyramid_reference import reference_pyramid

from virtime.errors import InvalidArgumentError
from virtime.stitch import omezarr
from virtime.stitch.canvas import StreamingCanvas
from virtime.stitch.observers import LevelTap, PyramidBuilder


@pytest.mark.parametrize("h, w, chunk", [(1000, 777, 64), (513, 300, 32), (255, 1025, 16),
                                         (100, 93, 7), (5, 3, 4), (1, 1, 2)])
def test_pyramid_builder_equals_build_level(tmp_path, h, w, chunk):
    rng = np.random.default_rng(h * 7 + w)
    level0 = rng.integers(0, 256, (3, h, w), dtype=np.uint8)
    n = omezarr.n_pyramid_levels((h, w), chunk)
    group = omezarr.create_pyramid(tmp_path / "p.zarr", 3, (h, w), chunk)
    seen: list[tuple[int, int, int]] = []
    builder = PyramidBuilder(group, (h, w), chunk, n,
                             listeners=[lambda k, y0, rows: seen.append((k, y0, rows.shape[1]))])
    for y0 in range(0, h, chunk):
        group["0"][:, y0 : y0 + chunk, :] = level0[:, y0 : y0 + chunk]
        builder.on_band(y0, level0[:, y0 : y0 + chunk])
    assert builder.complete
    for k, ref in enumerate(reference_pyramid(level0, n)):
        np.testing.assert_array_equal(np.asarray(group[str(k)][:]), ref, err_msg=f"level {k}")
        rows = [(y0, m) for lvl, y0, m in seen if lvl == k]
        assert sum(m for _, m in rows) == ref.shape[1]  # every row of every level, once, in order
        assert [y0 for y0, _ in rows] == list(np.cumsum([0] + [m for _, m in rows])[:-1])


def test_bands_out_of_order_are_refused(tmp_path):
    group = omezarr.create_pyramid(tmp_path / "p.zarr", 1, (64, 64), 16)
    builder = PyramidBuilder(group, (64, 64), 16, omezarr.n_pyramid_levels((64, 64), 16))
    with pytest.raises(InvalidArgumentError, match="expected row 0"):
        builder.on_band(16, np.zeros((1, 16, 64), np.uint8))


def _fill(canvas: StreamingCanvas, probs: np.ndarray, upto: int | None = None) -> None:
    """Adds ``probs`` (C, H, W) at factor 1 in windows of 32 rows, flushing as it goes."""
    h = probs.shape[1]
    for y in range(0, h if upto is None else upto, 32):
        canvas.add(probs[:, y : y + 32], 0, y)
        canvas.flush_until(y + 32)


def test_canvas_pyramid_is_streamed_not_reread(tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    probs = rng.random((23, 300, 210), dtype=np.float32)
    monkeypatch.setattr(omezarr, "build_level", lambda *a, **k: pytest.fail("level 0 reread"))
    canvas = StreamingCanvas(tmp_path / "c.zarr", (300, 210), factor=1, chunk=64)
    tap = LevelTap(1, omezarr.pyramid_shapes((300, 210), canvas.n_levels)[1], [0, 12, 14])
    canvas.add_level_listener(tap)
    _fill(canvas, probs)
    canvas.close()
    monkeypatch.undo()
    group = omezarr.open_ome_zarr(tmp_path / "c.zarr")
    level0 = np.asarray(group["0"][:])
    np.testing.assert_array_equal(level0, np.floor(probs.astype(np.float64) * 255 + 0.5))
    for k, ref in enumerate(reference_pyramid(level0, canvas.n_levels)):
        np.testing.assert_array_equal(np.asarray(group[str(k)][:]), ref)
    assert tap.complete
    np.testing.assert_array_equal(tap.image, np.asarray(group["1"][:])[[0, 12, 14]])


class _Recorder:
    def __init__(self):
        self.bands: list[tuple[int, np.ndarray]] = []
        self.prepared: list[int] = []

    def prepare(self, y0, y1):
        self.prepared.append(y0)
        return y1

    def on_band(self, y0, rows, prepared):
        assert prepared == y0 + rows.shape[1]
        self.bands.append((y0, rows.copy()))


def test_resumed_canvas_replays_finished_bands_to_observers(tmp_path):
    rng = np.random.default_rng(4)
    probs = rng.random((23, 256, 96), dtype=np.float32)
    path = tmp_path / "c.zarr"
    first = StreamingCanvas(path, (256, 96), factor=1, chunk=64, fingerprint={"m": 1})
    _fill(first, probs, upto=128)  # two of four bands finished, then the run dies
    first.abort()
    again = StreamingCanvas(path, (256, 96), factor=1, chunk=64, resume=True,
                            fingerprint={"m": 1})
    assert again.resume_y == 128
    rec = _Recorder()
    again.attach(rec)
    for y in range(128, 256, 32):
        again.add(probs[:, y : y + 32], 0, y)
        again.flush_until(y + 32)
    again.close()
    expected = np.floor(probs.astype(np.float64) * 255 + 0.5).astype(np.uint8)
    assert [y0 for y0, _ in rec.bands] == [0, 64, 128, 192] == rec.prepared
    np.testing.assert_array_equal(np.concatenate([r for _, r in rec.bands], axis=1), expected)
    group = omezarr.open_ome_zarr(path)
    for k, ref in enumerate(reference_pyramid(expected, again.n_levels)):
        np.testing.assert_array_equal(np.asarray(group[str(k)][:]), ref)


def test_observers_must_come_before_the_first_band(tmp_path):
    canvas = StreamingCanvas(tmp_path / "c.zarr", (128, 32), factor=1, chunk=64)
    canvas.add(np.zeros((23, 64, 32), np.float32), 0, 0)
    canvas.flush_until(64)
    with pytest.raises(InvalidArgumentError, match="before the first band"):
        canvas.attach(_Recorder())
    canvas.close()
