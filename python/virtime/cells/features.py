"""Cell-level slide features: densities, ratios, distances to tumour and co-localisation.

:func:`cell_features` turns one slide's cell table into one row of ``cells.*`` columns that join
the slide features table (so ``associate`` and ``survival`` use them):

* ``cells.<p>.density`` (cells per mm² of tissue), ``.density_tumour`` and ``.density_stroma``
  (per mm² of that compartment) for every phenotype and flag, and ``cells.total.density``;
* ``cells.cd8_t/cd4_t.ratio`` and ``cells.cd8_t/tumour.ratio`` (count ratios; NaN when the
  denominator is 0);
* per immune phenotype, the distance from each cell to the nearest tumour cell:
  ``cells.<p>.tumour_nn_median_um`` and ``cells.<p>.tumour_within_20um`` (fraction within 20 µm);
* ``cells.<a>~<b>.coloc_z``: neighbours of type b around cells of type a within
  ``coloc_radius_um`` (ordered pairs, so the count is symmetric), observed against the same count
  with phenotype labels permuted over all cells, as a z-score (> 0: the two types are found
  together more than chance, given where cells are).

Pair counts run in one numba pass over a bucket grid (bucket side = radius) that counts the
observed and every permuted labelling at once, so no neighbour list is stored: memory is the cell
coordinates and the labels, O(cells).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numba
import numpy as np
import pandas as pd
from numpy.typing import NDArray

__all__ = [
    "IMMUNE_PHENOTYPES",
    "cell_features",
    "colocalisation_z",
    "is_cell_feature",
    "nearest_distances",
    "pair_counts",
    "slide_cell_features",
]

IMMUNE_PHENOTYPES: tuple[str, ...] = ("cd8_t", "cd4_t", "b_cell", "plasma", "macrophage")
_TUMOUR = "tumour"
_NAME = r"[A-Za-z0-9_+-]+"
_CELL_FEATURE = re.compile(
    rf"cells\.(?:{_NAME}\.(?:density|density_tumour|density_stroma|tumour_nn_median_um"
    rf"|tumour_within_\d+(?:\.\d+)?um)|{_NAME}/{_NAME}\.ratio|{_NAME}~{_NAME}\.coloc_z)")


def is_cell_feature(name: str) -> bool:
    """Whether ``name`` is a column :func:`cell_features` writes (for the statistics commands)."""
    return _CELL_FEATURE.fullmatch(name) is not None


@numba.njit(cache=True, nogil=True)
def _pair_counts(x, y, labels, n_labels, radius):
    n_perm, n = labels.shape
    counts = np.zeros((n_perm, n_labels, n_labels), np.int64)
    if n == 0:
        return counts
    x0, y0 = x.min(), y.min()
    nbx = int((x.max() - x0) / radius) + 1
    nby = int((y.max() - y0) / radius) + 1
    key = np.empty(n, np.int64)
    for i in range(n):
        key[i] = int((y[i] - y0) / radius) * nbx + int((x[i] - x0) / radius)
    order = np.argsort(key)
    skey = key[order]
    r2 = radius * radius
    for a in range(n):
        i = order[a]
        bx = int((x[i] - x0) / radius)
        by = int((y[i] - y0) / radius)
        for dy in range(-1, 2):
            yy = by + dy
            if yy < 0 or yy >= nby:
                continue
            for dx in range(-1, 2):
                xx = bx + dx
                if xx < 0 or xx >= nbx:
                    continue
                k = yy * nbx + xx
                lo = np.searchsorted(skey, k)
                hi = np.searchsorted(skey, k + 1)
                for b in range(lo, hi):
                    j = order[b]
                    if j == i:
                        continue
                    ddx = x[i] - x[j]
                    ddy = y[i] - y[j]
                    if ddx * ddx + ddy * ddy <= r2:
                        for p in range(n_perm):
                            counts[p, labels[p, i], labels[p, j]] += 1
    return counts


def pair_counts(x: NDArray[np.floating], y: NDArray[np.floating], labels: NDArray[np.integer],
                n_labels: int, radius: float) -> NDArray[np.int64]:
    """Ordered neighbour-pair counts ``(P, L, L)`` within ``radius`` for ``P`` labellings ``(P, n)``.

    ``counts[p, a, b]`` = number of ordered pairs ``i != j`` with ``|x_i - x_j| <= radius``,
    ``labels[p, i] == a`` and ``labels[p, j] == b``.
    """
    lab = np.ascontiguousarray(np.atleast_2d(labels), np.int64)
    return _pair_counts(np.ascontiguousarray(x, np.float64), np.ascontiguousarray(y, np.float64),
                        lab, int(n_labels), float(radius))


def nearest_distances(src_xy: NDArray[np.floating], dst_xy: NDArray[np.floating]) -> NDArray[np.float64]:
    """Distance from each source point to the nearest destination point (inf without any).

    scipy's cKDTree (compiled, O(n log n)): faster than our bucket grid for this one query
    (``benchmarks/bench_cells.py``).
    """
    src = np.asarray(src_xy, np.float64).reshape(-1, 2)
    dst = np.asarray(dst_xy, np.float64).reshape(-1, 2)
    if len(src) == 0:
        return np.zeros(0)
    if len(dst) == 0:
        return np.full(len(src), np.inf)
    from scipy.spatial import cKDTree

    d, _ = cKDTree(dst).query(src, k=1)
    return np.asarray(d, np.float64)


def colocalisation_z(x: NDArray[np.floating], y: NDArray[np.floating], codes: NDArray[np.integer],
                     n_labels: int, radius: float, n_perm: int = 20,
                     seed: int = 0) -> NDArray[np.float64]:
    """``(L, L)`` z-scores of observed neighbour-pair counts against label permutations.

    The permutations shuffle ``codes`` over all cells with ``numpy.random.default_rng(seed)``
    (``rng.permutation`` once per draw, in order), so the result is reproducible.
    """
    codes = np.asarray(codes, np.int64)
    rng = np.random.default_rng(seed)
    labels = np.empty((n_perm + 1, len(codes)), np.int64)
    labels[0] = codes
    for p in range(n_perm):
        labels[p + 1] = rng.permutation(codes)
    counts = pair_counts(x, y, labels, n_labels, radius).astype(np.float64)
    null = counts[1:]
    sd = null.std(axis=0, ddof=1) if n_perm > 1 else np.zeros(counts.shape[1:])
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (counts[0] - null.mean(axis=0)) / sd
    z[~np.isfinite(z)] = np.nan
    return z


def cell_features(cells: pd.DataFrame, tissue_mm2: float, tumour_mm2: float | None = None, *,
                  phenotypes: Sequence[str] | None = None, flags: Sequence[str] | None = None,
                  near_um: float = 20.0, coloc_radius_um: float = 30.0, n_perm: int = 20,
                  seed: int = 0) -> dict[str, Any]:
    """One slide's ``cells.*`` features from its cell table (see the module docstring).

    Parameters
    ----------
    cells
        Needs ``x_um``, ``y_um``, ``phenotype``, ``compartment`` and the flag columns.
    tissue_mm2
        Tissue area of the slide; ``tumour_mm2`` the tumour-compartment area (the cell table's
        ``virtime.cells.tumour_mm2`` metadata); stroma = tissue - tumour. Without it the
        compartment densities are NaN.
    phenotypes, flags
        Default: those of the shipped gating table (flags only where the column exists).
    """
    from virtime.cells.gating import default_gating

    gating = default_gating()
    phenotypes = tuple(phenotypes) if phenotypes is not None else gating.phenotypes
    flags = tuple(f for f in (flags if flags is not None else gating.flags) if f in cells.columns)
    phen = cells["phenotype"].astype(str).to_numpy()
    comp = cells["compartment"].astype(str).to_numpy() if "compartment" in cells else None
    x = cells["x_um"].to_numpy(np.float64)
    y = cells["y_um"].to_numpy(np.float64)
    nan = float("nan")
    stroma_mm2 = None if tumour_mm2 is None else max(tissue_mm2 - tumour_mm2, 0.0)

    def dens(n: int, area: float | None) -> float:
        return n / area if area is not None and area > 0 else nan

    row: dict[str, Any] = {"cells.total.density": dens(len(cells), tissue_mm2)}
    groups = {p: phen == p for p in phenotypes}
    groups.update({f: cells[f].to_numpy(bool) for f in flags})
    for name, sel in groups.items():
        row[f"cells.{name}.density"] = dens(int(sel.sum()), tissue_mm2)
        if comp is not None:
            row[f"cells.{name}.density_tumour"] = dens(int((sel & (comp == "tumour")).sum()),
                                                       tumour_mm2)
            row[f"cells.{name}.density_stroma"] = dens(int((sel & (comp == "stroma")).sum()),
                                                       stroma_mm2)
    count = {p: int(s.sum()) for p, s in groups.items()}
    for a, b in (("cd8_t", "cd4_t"), ("cd8_t", _TUMOUR)):
        if a in count and b in count:
            row[f"cells.{a}/{b}.ratio"] = count[a] / count[b] if count[b] else nan
    tumour_xy = np.stack([x, y], 1)[phen == _TUMOUR] if _TUMOUR in groups else np.zeros((0, 2))
    for p in IMMUNE_PHENOTYPES:
        if p not in groups:
            continue
        d = nearest_distances(np.stack([x, y], 1)[groups[p]], tumour_xy)
        ok = d.size > 0 and len(tumour_xy) > 0
        row[f"cells.{p}.tumour_nn_median_um"] = float(np.median(d)) if ok else nan
        row[f"cells.{p}.tumour_within_{near_um:g}um"] = float(np.mean(d <= near_um)) if ok else nan
    names = list(phenotypes)
    codes = np.full(len(phen), len(names), np.int64)  # "other" and unknown: one extra label
    for k, p in enumerate(names):
        codes[phen == p] = k
    if len(phen) > 1 and coloc_radius_um > 0:
        z = colocalisation_z(x, y, codes, len(names) + 1, coloc_radius_um, n_perm, seed)
    else:
        z = np.full((len(names) + 1,) * 2, np.nan)
    for i, a in enumerate(names):
        for j in range(i, len(names)):
            v = z[i, j]
            row[f"cells.{a}~{names[j]}.coloc_z"] = float(v) if math.isfinite(v) else nan
    return row


def slide_cell_features(slide_dir: str | os.PathLike[str], tissue_mm2: float,
                        **kwargs: Any) -> dict[str, Any]:
    """:func:`cell_features` of a translated slide folder; ``{}`` when it has no cell table.

    The hook through which :func:`virtime.features.features_from_outputs` adds the ``cells.*``
    columns to a slide's feature row (tumour area from the table's metadata).
    """
    from virtime.cells.table import CELLS_FILE, read_cells, read_cells_metadata

    path = Path(slide_dir) / CELLS_FILE
    if not path.is_file():
        return {}
    import pyarrow.parquet as pq

    names = set(pq.read_schema(path).names)
    meta = read_cells_metadata(path)
    tumour = meta.get("cells.tumour_mm2")
    want = ["x_um", "y_um", "phenotype", "compartment"]
    want += [c for c in names if c not in want and not c.endswith((".mean", ".positive"))
             and c in {"proliferating", "pdl1_tumour"} | _flag_columns(meta)]
    cells = read_cells(path, columns=[c for c in want if c in names])
    return cell_features(cells, tissue_mm2, float(tumour) if tumour else None, **kwargs)


def _flag_columns(meta: dict[str, str]) -> set[str]:
    """Flag names of the gating table stored with a cell table."""
    import io

    text = meta.get("cells.gating")
    if not text:
        return set()
    g = pd.read_csv(io.StringIO(text))
    return set(g.loc[g["kind"] == "flag", "name"].astype(str))
