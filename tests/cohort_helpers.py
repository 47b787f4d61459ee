"""Helpers of the cohort tests: synthetic slide folders and local Dask clusters."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def make_cohort_slides(folder: Path, sizes: dict[str, tuple[int, int]], seed: int,
                       **columns: Callable[[int], Any] | Any) -> list[dict[str, Any]]:
    """One synthetic 0.5 µm/px slide ``<slide_id>.svs`` per ``slide_id: (width, height)`` (seeds
    ``seed``, ``seed + 1`` ...); returns their manifest rows, with ``columns`` (a value, or a
    function of the slide's position) beside path and slide_id."""
    from virtime.simulate.slides import make_slide

    rows = []
    for i, (sid, (w, h)) in enumerate(sizes.items()):
        make_slide(folder / f"{sid}.svs", w, h, mpp=0.5, seed=seed + i)
        rows.append({"path": f"{sid}.svs", "slide_id": sid,
                     **{k: v(i) if callable(v) else v for k, v in columns.items()}})
    return rows


@contextmanager
def local_client(n_workers: int, max_attempts: int = 3) -> Iterator[Any]:
    """The cohort runner's own local cluster (virtime.cohort.runner.open_client) of ``n_workers``
    one-thread processes on loopback, no dashboard, each task tried ``max_attempts`` times."""
    from virtime.cohort.runner import CohortOptions, open_client

    options = CohortOptions(workers=n_workers, threads_per_worker=1, dashboard=False,
                            max_attempts=max_attempts, quiet=True)
    with open_client(options) as client:
        yield client
