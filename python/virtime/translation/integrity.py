"""Is a finished slide folder still whole? The cheap look a rerun takes before "already done".

A folder whose ``summary.json`` says done is skipped by a rerun. A file deleted or cut short
since (a chunk of the map lost in a copy, a table removed by hand) would then stay damaged, and
only a later reader would notice (``virtime features`` verifies every chunk; ``virtime view``
reports a hole when it reaches it). So the skip first checks that the files the summary promises
exist and that every chunk of every pyramid level of the map is on disk and not empty: one
``stat`` per file, nothing decoded or hashed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from virtime.errors import InputDataError
from virtime.io import SlideFolder

__all__ = ["damaged_outputs"]


def damaged_outputs(out: str | os.PathLike[str],
                    summary: dict[str, Any] | None = None) -> str | None:
    """Why the outputs of the finished slide folder ``out`` are not whole, or None.

    Parameters
    ----------
    out
        The slide folder.
    summary
        Its ``summary.json`` (read when not given): a failed-tile mask is expected when it
        records failed tiles.
    """
    from virtime.io.omezarr import array_problem, read_ome_zarr

    folder = SlideFolder(Path(out))
    if summary is None:
        try:
            summary = folder.summary()
        except InputDataError as exc:
            return str(exc)
    needed = [folder.tiles, folder.tissue_mask]
    if int(summary.get("tiles_failed") or 0):
        needed.append(folder.failed_mask)
    for path in needed:
        if not path.is_file():
            return f"{path}: missing"
    try:
        image = read_ome_zarr(folder.zarr, verify=False)  # opens only
    except InputDataError as exc:
        return str(exc)
    for level_path, array in zip(image.level_paths, image.levels):
        problem = array_problem(array, folder.zarr / level_path, headers=False)
        if problem is not None:
            return problem
    return None
