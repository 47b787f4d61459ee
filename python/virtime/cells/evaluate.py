"""Scoring a cell table against known cells (the simulator's): detection F1 and phenotype counts.

Detections and true nuclei are matched one-to-one within a radius (4 µm by default), closest
pairs first. Truth phenotypes come from gating the simulator's own marker calls with the same
table, so the count comparison checks segmentation and measurement, not the gating rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from virtime.cells.gating import GatingTable

__all__ = ["CellScore", "match_points", "score_cells"]


@dataclass(frozen=True)
class CellScore:
    """Detection precision/recall/F1 and per-phenotype counts (``summary``: truth, found, error %)."""

    matched: int
    detected: int
    true: int
    summary: pd.DataFrame

    @property
    def precision(self) -> float:
        return self.matched / self.detected if self.detected else float("nan")

    @property
    def recall(self) -> float:
        return self.matched / self.true if self.true else float("nan")

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r > 0 else 0.0


def match_points(a: NDArray[np.floating], b: NDArray[np.floating], radius: float) -> NDArray[np.int64]:
    """One-to-one matches ``(m, 2)`` of rows of ``a`` and ``b`` within ``radius``, closest first."""
    from scipy.spatial import cKDTree

    a = np.asarray(a, np.float64).reshape(-1, 2)
    b = np.asarray(b, np.float64).reshape(-1, 2)
    if len(a) == 0 or len(b) == 0:
        return np.zeros((0, 2), np.int64)
    d = cKDTree(a).sparse_distance_matrix(cKDTree(b), radius, output_type="coo_matrix")
    order = np.argsort(d.data, kind="stable")
    used_a = np.zeros(len(a), bool)
    used_b = np.zeros(len(b), bool)
    out = []
    for k in order:
        i, j = d.row[k], d.col[k]
        if not used_a[i] and not used_b[j]:
            used_a[i] = used_b[j] = True
            out.append((i, j))
    return np.asarray(out, np.int64).reshape(-1, 2)


def score_cells(cells: pd.DataFrame, truth: pd.DataFrame, mpp: float, *, radius_um: float = 4.0,
                gating: GatingTable | None = None, scale: float = 1.0) -> CellScore:
    """Scores ``cells`` (a cell table) against ``truth`` (``render_tissue``'s cell table).

    ``truth`` positions are in pixels of an image at ``mpp``; ``cells`` positions are level-0
    pixels, ``scale`` truth pixels per level-0 pixel. Only nucleated truth cells (DAPI+) count.
    """
    from virtime.cells.gating import default_gating

    gating = gating or default_gating()
    t = truth[truth["DAPI"].astype(bool)] if "DAPI" in truth else truth
    det = cells[["x", "y"]].to_numpy(np.float64) * scale
    m = match_points(det, t[["x", "y"]].to_numpy(np.float64), radius_um / mpp)
    phen, _ = gating.apply(t)
    counts: dict[str, Any] = {
        "truth": pd.Series(phen).value_counts(),
        "found": cells["phenotype"].value_counts() if len(cells) else pd.Series(dtype=int),
    }
    summary = pd.DataFrame(counts).fillna(0).astype(int)
    summary["error_pct"] = 100.0 * (summary["found"] / summary["truth"].where(summary["truth"] > 0)
                                    - 1.0)
    return CellScore(len(m), len(det), len(t), summary.sort_values("truth", ascending=False))
