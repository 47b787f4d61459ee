"""Pyramid, thumbnail and slide features from the canvas bands as they are written (#16.5),
against the way they were made before: after the last band, by reading level 0 back.

Run: ``python -m pytest benchmarks/bench_band_outputs.py --benchmark-enable -s`` (or
``python benchmarks/bench_band_outputs.py``). A ``H x W`` canvas of the 23 channels is filled
with 256 x 256 windows of smooth random probabilities, band by band, as the tile loop does. Then:

* before (re-created here as the baseline): the bands are written, and at the end the pyramid is
  built level by level from the stored level above (``omezarr.build_level``), the features are
  computed from the stored level 0 (``compute_slide_features`` over the Zarr) and the thumbnail
  from the stored pyramid (``thumbnail_from_zarr``);
* after: the canvas's :class:`~virtime.stitch.observers.PyramidBuilder`, a
  :class:`~virtime.stitch.observers.LevelTap` and :class:`~virtime.features.bands.BandFeatures`
  take each band on the writer thread; at the end only the queue is drained.

Both give the same pyramid, features and thumbnail (checked). Printed: the loop time (filling,
while the writer thread works), the tail (from the last band to every output ready: what a slide
waits for after its last tile) and the total, medians of interleaved repeats.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

H, W, CHUNK, WIN = 2048, 1536, 256, 256
THUMB_CHANNELS = ("DAPI", "CD8", "CK")


def _windows(seed: int = 0) -> list[tuple[int, int, np.ndarray]]:
    """Row-major 256 x 256 windows of smooth probabilities in [0, 1]."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((23, H // 32 + 1, W // 32 + 1), dtype=np.float32)
    full = np.repeat(np.repeat(coarse, 32, axis=1), 32, axis=2)[:, :H, :W]
    full = np.clip(full + rng.normal(0, 0.05, full.shape).astype(np.float32), 0, 1)
    return [(x, y, full[:, y : y + WIN, x : x + WIN]) for y in range(0, H, WIN)
            for x in range(0, W, WIN)]


def _fill(canvas, windows, engine_s: float) -> float:
    t0 = time.perf_counter()
    for i, (x, y, p) in enumerate(windows):
        if engine_s:
            time.sleep(engine_s)  # the engine's time for this window (the GIL is free meanwhile)
        canvas.add(p, x, y)
        nxt = windows[i + 1][1] if i + 1 < len(windows) else H
        canvas.flush_until(nxt)
    return time.perf_counter() - t0


def _tissue() -> np.ndarray:
    yy, xx = np.mgrid[:H, :W]
    return ((yy - H / 2) ** 2 / (0.45 * H) ** 2 + (xx - W / 2) ** 2 / (0.45 * W) ** 2) < 1


def _before(folder: Path, windows, tissue, he, engine_s: float) -> dict[str, float]:
    from virtime.features.table import compute_slide_features
    from virtime.stitch import omezarr
    from virtime.stitch.canvas import StreamingCanvas
    from virtime.stitch.thumbnail import thumbnail_from_zarr

    class OldCanvas(StreamingCanvas):
        """The canvas as it was: bands only; the pyramid built from disk in close()."""

        def close(self) -> None:
            self.flush_until(self.shape_yx[0] * self.factor)
            self._raise_writer_errors(wait=True)
            self._writer.shutdown(wait=True)
            for k in range(1, self.n_levels):
                omezarr.build_level(self._group[str(k - 1)],
                                    omezarr.writable_level(self._group, k), self.chunk)

    path = folder / "before.ome.zarr"
    canvas = OldCanvas(path, (H, W), factor=1, chunk=CHUNK)
    canvas._observers = []  # no streamed pyramid: the baseline builds it from disk
    loop = _fill(canvas, windows, engine_s)
    t0 = time.perf_counter()
    canvas.close()
    omezarr.write_ngff_metadata(canvas._group, n_levels=canvas.n_levels,
                                channels=canvas.channels, mpp=2.0, name="b")
    group = omezarr.open_ome_zarr(path)
    feats = compute_slide_features(group["0"], tissue, 2.0)
    thumb = thumbnail_from_zarr(path, he, THUMB_CHANNELS)
    tail = time.perf_counter() - t0
    return {"loop": loop, "tail": tail, "feats": feats, "thumb": thumb, "path": path}


def _after(folder: Path, windows, tissue, he, engine_s: float) -> dict[str, float]:
    from virtime.channels import channel_index
    from virtime.features.bands import BandFeatures
    from virtime.stitch import omezarr
    from virtime.stitch.canvas import StreamingCanvas
    from virtime.stitch.observers import LevelTap
    from virtime.stitch.thumbnail import thumbnail_from_probs, thumbnail_level

    path = folder / "after.ome.zarr"
    canvas = StreamingCanvas(path, (H, W), factor=1, chunk=CHUNK, mpp=2.0)
    shapes = omezarr.pyramid_shapes((H, W), canvas.n_levels)
    level = thumbnail_level(shapes)
    tap = LevelTap(level, shapes[level], [channel_index(c) for c in THUMB_CHANNELS])
    canvas.add_level_listener(tap)
    features = BandFeatures(2.0, [c.name for c in canvas.channels],
                            lambda y0, y1: tissue[y0:y1])
    canvas.attach(features)
    loop = _fill(canvas, windows, engine_s)
    t0 = time.perf_counter()
    canvas.close()
    feats = features.result()
    thumb = thumbnail_from_probs(tap.image, he, THUMB_CHANNELS)
    tail = time.perf_counter() - t0
    return {"loop": loop, "tail": tail, "feats": feats, "thumb": thumb, "path": path}


def _same(a: dict, b: dict) -> None:
    from virtime.stitch import omezarr

    ga, gb = omezarr.open_ome_zarr(a["path"]), omezarr.open_ome_zarr(b["path"])
    for k in ga.array_keys():
        assert np.array_equal(np.asarray(ga[k][:]), np.asarray(gb[k][:])), f"level {k}"
    assert np.array_equal(a["thumb"], b["thumb"])
    fa, fb = a["feats"], b["feats"]
    assert set(fa) == set(fb)
    for key in fa:
        va, vb = fa[key], fb[key]
        assert (va == vb) or (va != va and vb != vb), key  # equal, or both NaN


def measure(repeats: int = 3, engine_s: float = 0.0) -> dict[str, float]:
    """``engine_s``: seconds of (simulated) engine time per window; 0 is a loop with nothing to
    overlap, where the writer thread's work shows in the tail."""
    from virtime.stitch import omezarr

    windows = _windows()
    tissue = _tissue()
    thumb_shape = omezarr.pyramid_shapes((H, W), omezarr.n_pyramid_levels((H, W), CHUNK))
    from virtime.stitch.thumbnail import thumbnail_level

    he = np.full((*thumb_shape[thumbnail_level(thumb_shape)], 3), 200, np.uint8)
    runs: dict[str, list[dict]] = {"before": [], "after": []}
    with tempfile.TemporaryDirectory() as d:
        for r in range(repeats):  # interleaved, so machine load falls on both alike
            for name, fn in (("before", _before), ("after", _after)):
                folder = Path(d) / f"{name}{r}"
                folder.mkdir()
                runs[name].append(fn(folder, windows, tissue, he, engine_s))
        _same(runs["before"][0], runs["after"][0])
    res: dict[str, float] = {}
    for name, rs in runs.items():
        for key in ("loop", "tail"):
            res[f"{name}_{key}_s"] = float(np.median([r[key] for r in rs]))
        res[f"{name}_total_s"] = float(np.median([r["loop"] + r["tail"] for r in rs]))
    res["tail_ratio"] = res["before_tail_s"] / res["after_tail_s"]
    res["total_ratio"] = res["before_total_s"] / res["after_total_s"]
    return res


def _print(res: dict[str, float], engine_s: float) -> None:
    print(f"\ncanvas {H}x{W}x23, chunk {CHUNK}, engine {engine_s * 1e3:.0f} ms/window: "
          f"medians of interleaved repeats")
    print("| path | loop s | tail s | total s |")
    print("| --- | --- | --- | --- |")
    for name in ("before", "after"):
        print(f"| {name} | {res[name + '_loop_s']:.2f} | {res[name + '_tail_s']:.2f} | "
              f"{res[name + '_total_s']:.2f} |")
    print(f"tail before/after {res['tail_ratio']:.2f}x, total {res['total_ratio']:.2f}x")


def test_band_outputs(benchmark) -> None:
    res = benchmark.pedantic(measure, rounds=1, iterations=1)
    _print(res, 0.0)
    _print(measure(engine_s=0.05), 0.05)


if __name__ == "__main__":
    for engine_s in (0.0, 0.05):
        _print(measure(engine_s=engine_s), engine_s)
