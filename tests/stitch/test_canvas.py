"""StreamingCanvas: the pooled blend formula, resume after kill -9, bounded memory, misuse."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

from virtime.channels import CHANNEL_NAMES
from virtime.errors import InvalidArgumentError
from virtime.stitch.canvas import StreamingCanvas, canvas_finished, manifest_path
from virtime.stitch.windows import plan_windows, tile_stride, window_weight

CH = CHANNEL_NAMES[:3]
TILE, WIN, OVERLAP, FACTOR = 64, 32, 8, 4


def _tiles(rows: int, cols: int):
    """Row-major tile origins on the overlapping grid, with a deterministic seed per tile."""
    s = tile_stride(TILE, OVERLAP)
    return [(r * s, c * s, r * cols + c) for r in range(rows) for c in range(cols)]


def _window_probs(seed: int, k: int) -> np.ndarray:
    return np.random.default_rng(1000 * seed + k).random((len(CH), WIN, WIN), dtype=np.float32)


def _extent(rows: int, cols: int) -> tuple[int, int]:
    s = tile_stride(TILE, OVERLAP)
    return (s * (rows - 1) + TILE, s * (cols - 1) + TILE)


def _run(
    path: Path,
    rows: int,
    cols: int,
    *,
    resume: bool = False,
    stop_after_bands: int | None = None,
    chunk: int = 8,
    skip=lambda ty, tx: False,
) -> StreamingCanvas:
    h, w = _extent(rows, cols)
    canvas = StreamingCanvas(
        path,
        (-(-h // FACTOR), -(-w // FACTOR)),
        factor=FACTOR,
        mpp=0.25 * FACTOR,
        channels=CH,
        chunk=chunk,
        resume=resume,
    )
    weight = window_weight(WIN, OVERLAP)
    written = 0
    for ty, tx, seed in _tiles(rows, cols):
        if ty + TILE <= canvas.resume_y or skip(ty, tx):  # done in an earlier run / background
            continue
        written += canvas.flush_until(ty)
        if stop_after_bands is not None and written >= stop_after_bands:
            return canvas  # abandoned without close(), as a killed run would
        for k, (ox, oy) in enumerate(plan_windows(TILE, WIN, OVERLAP)):
            canvas.add(_window_probs(seed, k), tx + ox, ty + oy, weight)
    canvas.close()
    return canvas


def _levels(path: Path) -> list[np.ndarray]:
    g = zarr.open_group(str(path), mode="r")
    return [np.asarray(g[d["path"]][:]) for d in g.attrs["multiscales"][0]["datasets"]]


def test_canvas_is_the_weighted_block_mean_of_the_full_resolution_blend(tmp_path) -> None:
    rows, cols = 3, 4
    h, w = _extent(rows, cols)
    W = np.zeros((h, w))
    WP = np.zeros((len(CH), h, w))
    weight = window_weight(WIN, OVERLAP).astype(np.float64)
    for ty, tx, seed in _tiles(rows, cols):
        for k, (ox, oy) in enumerate(plan_windows(TILE, WIN, OVERLAP)):
            y, x = ty + oy, tx + ox
            WP[:, y : y + WIN, x : x + WIN] += weight * _window_probs(seed, k)
            W[y : y + WIN, x : x + WIN] += weight
    P = WP / W  # full-resolution blend
    # Documented identity: pooled ratio = W-weighted block mean of the full-resolution blend.
    hb, wb = h // FACTOR, w // FACTOR
    num = (W * P).reshape(len(CH), hb, FACTOR, wb, FACTOR).sum(axis=(2, 4))
    den = W.reshape(hb, FACTOR, wb, FACTOR).sum(axis=(1, 3))
    ref = np.floor(num / den * 255 + 0.5)
    _run(tmp_path / "c.ome.zarr", rows, cols)
    got = _levels(tmp_path / "c.ome.zarr")[0].astype(np.int64)
    assert got.shape == (len(CH), hb, wb)
    diff = np.abs(got - ref)
    assert diff.max() <= 1 and (diff == 0).mean() > 0.99
    # ... which is not simply the plain block mean where W varies inside a block.
    plain = np.floor(P.reshape(len(CH), hb, FACTOR, wb, FACTOR).mean(axis=(2, 4)) * 255 + 0.5)
    assert np.abs(plain - ref).max() >= 1


def test_uniform_weights_give_the_plain_block_mean(tmp_path, rng) -> None:
    probs = rng.random((len(CH), 64, 96), dtype=np.float32)
    c = StreamingCanvas(tmp_path / "u.ome.zarr", (8, 12), factor=8, mpp=2.0, channels=CH, chunk=4)
    for y in (0, 32):
        for x in (0, 32, 64):
            c.add(probs[:, y : y + 32, x : x + 32], x, y)  # abutting, unblended
    c.close()
    ref = np.floor(probs.astype(np.float64).reshape(3, 8, 8, 12, 8).mean(axis=(2, 4)) * 255 + 0.5)
    got = _levels(tmp_path / "u.ome.zarr")[0].astype(np.int64)
    assert np.abs(got - ref).max() <= 1 and (got == ref).mean() > 0.99


def test_empty_area_is_zero_and_partial_windows_are_cropped(tmp_path) -> None:
    c = StreamingCanvas(tmp_path / "e.ome.zarr", (10, 10), factor=1, mpp=0.25, channels=CH, chunk=4)
    c.add(np.full((3, 4, 4), 0.5, np.float32), 8, 8)  # hangs over the bottom-right corner
    c.close()
    got = _levels(tmp_path / "e.ome.zarr")[0]
    expected = np.zeros((3, 10, 10), np.uint8)
    expected[:, 8:, 8:] = 128  # floor(127.5 + 0.5)
    np.testing.assert_array_equal(got, expected)


_KILL_SCRIPT = """
import os, sys
sys.path[:0] = {paths!r}
import test_canvas as t
canvas = t._run(t.Path({path!r}), {rows}, {cols}, stop_after_bands={k})
canvas._raise_writer_errors(wait=True)  # the k flushed bands reach the disk (written async)
os.kill(os.getpid(), 9)
"""


def test_resume_after_kill_is_byte_identical(tmp_path) -> None:
    rows, cols, k = 6, 3, 4
    _run(tmp_path / "ref.ome.zarr", rows, cols)
    target = tmp_path / "run.ome.zarr"
    here = str(Path(__file__).parent)
    pkg = str(Path(__file__).resolve().parents[2] / "python")
    script = _KILL_SCRIPT.format(paths=[here, pkg], path=str(target), rows=rows, cols=cols, k=k)
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, timeout=120, check=False
    )
    assert proc.returncode == -9, proc.stderr.decode()
    manifest = json.loads(manifest_path(target).read_text())
    done = manifest["stages"]["level0_bands"]
    assert len(done) >= k and done == list(range(len(done))) and not manifest["finished"]
    k = len(done)
    assert not canvas_finished(target)
    # Make the first incomplete band look torn: a garbage chunk and a stale temporary file.
    chunk_file = target / "0" / "0" / str(k) / "0"
    chunk_file.parent.mkdir(parents=True, exist_ok=True)
    chunk_file.write_bytes(b"garbage")
    (chunk_file.parent / "1.deadbeef.partial").write_bytes(b"x")
    before = {
        p: p.stat().st_mtime_ns
        for p in (target / "0").rglob("*")
        if p.is_file() and int(p.parent.name) < k
    }
    h, w = _extent(rows, cols)
    probe = StreamingCanvas(
        target,
        (-(-h // FACTOR), -(-w // FACTOR)),
        factor=FACTOR,
        mpp=0.25 * FACTOR,
        channels=CH,
        chunk=8,
        resume=True,
    )
    assert probe.resume_y == k * 8 * FACTOR and not probe.finished  # first model row to redo
    del probe
    _run(target, rows, cols, resume=True)
    assert canvas_finished(target)
    for a, b in zip(_levels(tmp_path / "ref.ome.zarr"), _levels(target), strict=True):
        np.testing.assert_array_equal(a, b)
    assert not list(target.rglob("*.partial"))
    after = {p: p.stat().st_mtime_ns for p in before}
    assert after == before  # completed bands were never rewritten


def test_finished_canvas_is_skipped_and_mismatched_resume_refused(tmp_path) -> None:
    path = tmp_path / "f.ome.zarr"
    _run(path, 2, 2)
    assert canvas_finished(path)
    again = StreamingCanvas(
        path, (30, 30), factor=FACTOR, mpp=0.25 * FACTOR, channels=CH, chunk=8, resume=True
    )
    assert again.finished and again.resume_y >= 30 * FACTOR
    with pytest.raises(InvalidArgumentError, match="chunk"):
        StreamingCanvas(
            path, (30, 30), factor=FACTOR, mpp=0.25 * FACTOR, channels=CH, chunk=16, resume=True
        )
    fresh = StreamingCanvas(
        path, (30, 30), factor=FACTOR, mpp=0.25 * FACTOR, channels=CH, chunk=16, resume=False
    )  # --force: start over
    assert not fresh.finished and not canvas_finished(path)


def test_out_of_order_window_is_an_error(tmp_path) -> None:
    c = StreamingCanvas(tmp_path / "o.ome.zarr", (16, 16), factor=1, mpp=0.25, channels=CH, chunk=4)
    c.add(np.zeros((3, 4, 4), np.float32), 0, 0)
    c.flush_until(8)
    with pytest.raises(InvalidArgumentError, match="row-major"):
        c.add(np.zeros((3, 4, 4), np.float32), 0, 6)
    with pytest.raises(InvalidArgumentError):
        c.add(np.zeros((2, 4, 4), np.float32), 0, 12)  # wrong channel count


def test_refuses_to_replace_a_foreign_folder(tmp_path) -> None:
    other = tmp_path / "photos"
    other.mkdir()
    (other / "keep.txt").write_text("x")
    with pytest.raises(InvalidArgumentError, match="not a virtime"):
        StreamingCanvas(other, (4, 4), factor=1, channels=CH)
    assert (other / "keep.txt").exists()


def test_accumulator_memory_does_not_grow_with_height(tmp_path) -> None:
    peaks = {}
    for rows in (4, 16):
        h, w = _extent(rows, 3)
        c = StreamingCanvas(
            tmp_path / f"m{rows}.ome.zarr",
            (-(-h // FACTOR), -(-w // FACTOR)),
            factor=FACTOR,
            mpp=1.0,
            channels=CH,
            chunk=8,
        )
        weight = window_weight(WIN, OVERLAP)
        peak_bytes = peak_bands = 0
        for ty, tx, seed in _tiles(rows, 3):
            c.flush_until(ty)
            for k, (ox, oy) in enumerate(plan_windows(TILE, WIN, OVERLAP)):
                c.add(_window_probs(seed, k), tx + ox, ty + oy, weight)
            peak_bytes = max(peak_bytes, c.accumulator_nbytes)
            peak_bands = max(peak_bands, c.open_bands)
        c.close()
        assert c.open_bands == 0 and c.accumulator_nbytes == 0
        peaks[rows] = (peak_bytes, peak_bands)
    assert peaks[4] == peaks[16]
    # A tile spans TILE/FACTOR = 16 output rows: at most 16/8 + 1 = 3 bands of (C+1) x 8 x width.
    width = -(-_extent(1, 3)[1] // FACTOR)
    assert peaks[16][1] <= 3
    assert peaks[16][0] <= 3 * (len(CH) + 1) * 8 * width * 4
