"""Peak memory of the slide page (``index.html``) on single-level (flat) TIFFs of growing size.

Run: ``python -m pytest benchmarks/bench_page_memory.py --benchmark-enable -s`` (or
``python benchmarks/bench_page_memory.py``; sizes with ``VIRTIME_BENCH_FLAT_SIZES=2048,24576``).

A flat slide has one level, so every H&E the page shows comes from level 0. Each size is a
single-level tiled TIFF of constant-colour 256-px tiles (written streaming, compresses to almost
nothing; every pixel still decodes), next to a small translated output folder; the page is built
in a fresh process (``write_slide_page``) and its peak RSS (``VmHWM``) read from ``/proc``.
Baseline: the same page on the smallest slide, in the same run; the ratio is each size's peak RSS
over the baseline's (1.0 means memory does not depend on the slide's pixel count). The page's H&E
is checked against the known tile colours (the exact area mean) for every size. ``naive`` is the
one-call read of the whole level that the page must not do, measured on the 8192² slide only
(it needs ~3x the level's bytes: 0.6 GB there, 5 GB at 24576²).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

TILE = 256

_CHILD = r"""
import base64, io, json, re, sys
import numpy as np
from PIL import Image
from virtime.slide import Slide
out, flat, naive = sys.argv[1], sys.argv[2], sys.argv[3] == "naive"
slide = Slide(flat, mpp=0.5)
if naive:  # the whole level in one call, then resized
    w, h = slide.dimensions
    img = Image.fromarray(slide.read_region(0, 0, 0, w, h)).resize((256, 192), Image.Resampling.BOX)
    he = np.asarray(img)
else:
    from virtime.view.page import write_slide_page
    text = write_slide_page(out, slide=slide).read_text()
    uri = re.search(r"<img alt='H&amp;E' src='data:image/jpeg;base64,([^']+)'", text).group(1)
    he = np.asarray(Image.open(io.BytesIO(base64.b64decode(uri))).convert("RGB"))
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
np.save(sys.argv[4], he)
print(json.dumps({"peak_rss_mib": hwm / 1024}))
"""


def _colours(n: int) -> np.ndarray:
    """Tile colours: smooth gradients (few JPEG artefacts), so the expected page is exact."""
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    return np.stack([60 + 120 * i // max(n - 1, 1), 60 + 120 * j // max(n - 1, 1),
                     np.full_like(i, 150)], axis=-1).astype(np.uint8)


def _output_folder(root: Path) -> Path:
    """A translated slide's folder as the page reads it: a 192 x 256 canvas of 23 channels."""
    from virtime.channels import CHANNEL_NAMES
    from virtime.stitch.canvas import StreamingCanvas

    out = root / "out" / "S"
    out.mkdir(parents=True)
    canvas = StreamingCanvas(out / "mif.ome.zarr", (192, 256), factor=1, mpp=2.0, chunk=64,
                             name="S")
    probs = np.zeros((len(CHANNEL_NAMES), 192, 256), np.float32)
    probs[CHANNEL_NAMES.index("CD8"), 40:100, 60:140] = 1.0
    canvas.add(probs, 0, 0)
    canvas.close()
    return out


def _expected(colours: np.ndarray) -> np.ndarray:
    """The area mean of the tile image at 192 x 256 (each tile is a whole block when the tile
    count divides both; otherwise by exact box weights)."""
    from virtime.stitch.thumbnail import box_weights

    wy, wx = box_weights(colours.shape[0], 192), box_weights(colours.shape[1], 256)
    c = colours.astype(np.float64)
    return np.stack([wy @ (wx @ c[..., k].T).T for k in range(3)], axis=-1)


def _run(out: Path, flat: Path, mode: str, tmp: Path) -> tuple[float, np.ndarray]:
    he_file = tmp / f"he-{flat.stem}-{mode}.npy"
    done = subprocess.run([sys.executable, "-c", _CHILD, str(out), str(flat), mode, str(he_file)],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])["peak_rss_mib"], np.load(he_file)


def measure(sizes: tuple[int, ...] = (2048, 8192, 24576)) -> dict[str, float]:
    """Peak RSS (MiB) of the page per flat slide size, the naive read at 8192², and ratios."""
    from virtime.simulate.slides import write_flat_slide

    res: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        out = _output_folder(tmp)
        for size in sizes:
            colours = _colours(size // TILE)
            flat = write_flat_slide(tmp / f"flat{size}.tif", colours, mpp=0.5, tile=TILE)
            rss, he = _run(out, flat, "page", tmp)
            err = float(np.abs(he.astype(float) - _expected(colours)).mean())
            assert err < 3, f"{size}²: the page's H&E is off by {err:.2f} grey levels on average"
            res[f"page_{size}_mib"] = rss
            if size == 8192:
                res["naive_8192_mib"], he = _run(out, flat, "naive", tmp)
            flat.unlink()
    base = res[f"page_{sizes[0]}_mib"]
    for size in sizes:
        res[f"ratio_{size}"] = res[f"page_{size}_mib"] / base
    return res


def _sizes() -> tuple[int, ...]:
    raw = os.environ.get("VIRTIME_BENCH_FLAT_SIZES", "2048,8192,24576")
    return tuple(int(s) for s in raw.split(","))


def _print(res: dict[str, float]) -> None:
    for key, value in res.items():
        unit = "x" if key.startswith("ratio") else " MiB"
        print(f"{key:>18}: {value:8.2f}{unit}")


def test_page_memory_on_flat_slides(benchmark) -> None:
    res = benchmark.pedantic(measure, args=(_sizes(),), rounds=1, iterations=1)
    benchmark.extra_info.update(res)
    _print(res)
    sizes = _sizes()
    # peak RSS must not follow the pixel count (which grows (largest / smallest)² times)
    assert res[f"ratio_{sizes[-1]}"] < 1.5


if __name__ == "__main__":
    _print(measure(_sizes()))
