"""#17 on CPU: the idle gap between two slides of a cohort worker with and without prefetching, and
the bytes the device path downloads per tile for ``--cells``.

Run: ``python benchmarks/bench_cohort_prefetch.py``. No GPU: the device path runs on torch CPU
tensors (``TranslateConfig(device_path=True)``), so "idle" is the time the engine waits between
the last batch of slide 1 and the first batch of slide 2 on one worker (1 thread), measured from
timestamps of ``DeviceTranslator.submit`` in the worker process. Baseline (``prefetch_bytes=0``)
and prefetching runs alternate in the same session on one LocalCluster; medians of ``REPEATS``.
Outputs of the two are checked byte-equal.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPEATS = 3


def _install_probe() -> None:
    """In the worker: timestamps of every submit, grouped by translator (one per slide)."""
    from virtime.translation import device_path as dp

    if getattr(dp.DeviceTranslator, "_probe", None) is not None:
        dp.DeviceTranslator._probe.clear()
        return
    probe: list[tuple[int, float, float]] = []
    init, submit = dp.DeviceTranslator.__init__, dp.DeviceTranslator.submit

    def _init(self, *a, **k):
        init(self, *a, **k)
        self._probe_id = time.time_ns()

    def _submit(self, *a, **k):
        t0 = time.time()
        out = submit(self, *a, **k)
        probe.append((self._probe_id, t0, time.time()))
        return out

    dp.DeviceTranslator.__init__, dp.DeviceTranslator.submit = _init, _submit
    dp.DeviceTranslator._probe = probe


def _read_probe() -> list[tuple[int, float, float]]:
    from virtime.translation import device_path as dp

    return list(dp.DeviceTranslator._probe)


def _gap(probe: list[tuple[int, float, float]], ledger: pd.DataFrame) -> tuple[float, ...]:
    """(idle gap, slide 1 tail after its last batch, between the tasks, slide 2 head before its
    first batch, slide 2's prefetch_seconds)."""
    ids = sorted({p[0] for p in probe})
    assert len(ids) == 2, ids
    last = max(t1 for i, _, t1 in probe if i == ids[0])
    first = min(t0 for i, t0, _ in probe if i == ids[1])
    one, two = ledger.sort_values("started").to_dict("records")
    return (first - last, one["finished"] - last, two["started"] - one["finished"],
            first - two["started"], two["prefetch_seconds"])


def idle_gap() -> dict[str, list[float]]:
    import torch
    from distributed import Client, LocalCluster

    from virtime.cohort import run_cohort
    from virtime.cohort.runner import CohortOptions
    from virtime.models import GigaTIME, save
    from virtime.simulate.slides import make_slide
    from virtime.translation import TranslateConfig

    root = Path(tempfile.mkdtemp(prefix="bench-prefetch-"))
    torch.manual_seed(0)
    weights = root / "tiny.safetensors"
    save(GigaTIME(filters=[4, 8, 16, 32, 64]).eval(), weights, input_mpp=0.5, window=64)
    paths = [make_slide(root / "a.svs", 2048, 1536, mpp=0.5, seed=1),
             make_slide(root / "b.svs", 1536, 2048, mpp=0.5, seed=2),
             make_slide(root / "warm.svs", 512, 384, mpp=0.5, seed=3)]
    man = pd.DataFrame({"path": [str(p) for p in paths], "slide_id": [p.stem for p in paths],
                        "patient_id": ["P0", "P1", "P2"]})
    config = TranslateConfig(tile_size=128, output_mpp=2.0, backend="torch", device="cpu",
                             device_path=True, show_progress=False, batch_size=4,
                             window_batch=16, threads=1, min_tissue=0.1, features=False)
    gaps: dict[str, list[tuple[float, ...]]] = {"baseline": [], "prefetch": []}
    cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                           dashboard_address=":0")
    client = Client(cluster)
    try:
        run_cohort(man.iloc[2:], weights, root / "warm", config, client=client,
                   options=CohortOptions(show_progress=False))  # engine built, numba warm
        outs = {}
        for rep in range(REPEATS):
            for name, nbytes in (("baseline", 0), ("prefetch", 1 << 30)):
                client.run(_install_probe)
                out = root / f"{name}{rep}"
                res = run_cohort(man.iloc[:2], weights, out, config, client=client,
                                 options=CohortOptions(show_progress=False,
                                                       prefetch_bytes=nbytes))
                assert res.counts["done"] == 2
                gaps[name].append(_gap(client.run(_read_probe).popitem()[1], res.ledger))
                outs[name] = out
        import zarr

        for sid in ("a", "b"):  # outputs identical with and without
            za = zarr.open_group(str(outs["baseline"] / sid / "mif.ome.zarr"), mode="r")["0"][:]
            zb = zarr.open_group(str(outs["prefetch"] / sid / "mif.ome.zarr"), mode="r")["0"][:]
            assert np.array_equal(np.asarray(za), np.asarray(zb))
    finally:
        client.close()
        cluster.close()
    return gaps


def cells_bytes() -> dict[str, float]:
    """Bytes per tile the device path downloads with --cells (measured) against what the host
    path moves off the engine per tile (float32 logits of its windows)."""
    import torch

    from virtime.models import load_demo
    from virtime.simulate.slides import write_slide
    from virtime.simulate.tissue import render_tissue
    from virtime.translation import TranslateConfig, translate
    from virtime.translation import device_path as dp

    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp(prefix="bench-cells-bytes-"))
    rgb, _, _ = render_tissue((384, 512), mpp=0.5, rng=np.random.default_rng(3))
    slide = write_slide(root / "s.svs", rgb, 0.5)
    seen = {"tiles": 0, "cells": 0, "blocks": 0}
    assemble = dp.DeviceTranslator._assemble

    def _assemble(self, *a, **k):
        res = assemble(self, *a, **k)
        seen["tiles"] += len(res.positive_fraction)
        seen["cells"] += 0 if res.tile_probabilities is None else res.tile_probabilities.nbytes
        seen["blocks"] += sum(q.nbytes for q, *_ in res.blocks)
        return res

    dp.DeviceTranslator._assemble = _assemble
    try:
        cfg = TranslateConfig(tile_size=256, overlap=0, show_progress=False, backend="torch",
                              device="cpu", device_path=True, cells=True, batch_size=2)
        model = load_demo()
        translate(slide, model, root / "out", cfg)
    finally:
        dp.DeviceTranslator._assemble = assemble
    window = int(model.card.window)
    k = (256 // window) ** 2
    return {"tiles": seen["tiles"], "cells_per_tile": seen["cells"] / seen["tiles"],
            "blocks_per_tile": seen["blocks"] / seen["tiles"],
            "host_logits_per_tile": k * 23 * window * window * 4.0, "window": window}


if __name__ == "__main__":
    b = cells_bytes()
    print(f"cells download (tile 256, window {b['window']}, {b['tiles']} tiles): "
          f"{b['cells_per_tile'] / 1e6:.3f} MB/tile uint8 + {b['blocks_per_tile'] / 1e3:.1f} KB "
          f"pooled blocks; host path logits {b['host_logits_per_tile'] / 1e6:.3f} MB/tile")
    g = idle_gap()
    parts = ("idle gap", "slide-1 tail", "between tasks", "slide-2 head", "prefetch_seconds")
    med = {}
    for name, rows in g.items():
        med[name] = [statistics.median(r[i] for r in rows) for i in range(len(parts))]
        print(f"{name}: gaps {[round(r[0], 3) for r in rows]} s; medians " +
              ", ".join(f"{p} {m:.3f} s" for p, m in zip(parts, med[name])))
    print(f"ratio baseline/prefetch (idle gap): {med['baseline'][0] / med['prefetch'][0]:.2f}x; "
          f"slide-2 head: {med['baseline'][3] / med['prefetch'][3]:.2f}x")
