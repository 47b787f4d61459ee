"""Paired H&E / mIF tiles on disk, and the dataset that feeds them to training.

On-disk format of a pairs folder (``PAIRS_DIR``)::

    PAIRS_DIR/
      index.csv          tile_id, slide_id, he, target, height, width, mpp
      pairs.json         {"format": 1, "mpp": ..., "channels": [...23 names...]}
      he/<tile_id>.png   RGB uint8 H&E tile
      targets/<tile_id>.npz
                         "bits": np.packbits of the (23, H*W) boolean targets along axis 1,
                         "shape": (23, H, W); or "targets": a (23, H, W) bool/uint8 array

Paths in ``index.csv`` are relative to ``PAIRS_DIR``. ``slide_id`` groups tiles of one slide so
that train/validation split by slide, never by tile (neighbouring tiles of one slide would
leak). The split is deterministic: slides are ordered by a hash of their id.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from virtime.channels import CHANNEL_NAMES
from virtime.errors import InputDataError

__all__ = [
    "PAIRS_FORMAT",
    "write_pair",
    "write_simulated_pairs",
    "read_index",
    "load_pair",
    "split_by_slide",
    "PairDataset",
]

logger = logging.getLogger(__name__)
PAIRS_FORMAT = 1
_COLUMNS = ("tile_id", "slide_id", "he", "target")


def _atomic(path: Path, data: bytes) -> None:
    from virtime.io import atomic_write_bytes

    atomic_write_bytes(path, data)


def write_pair(pairs_dir: str | os.PathLike[str], tile_id: str, rgb: np.ndarray,
               targets: np.ndarray) -> dict[str, object]:
    """Writes one tile's PNG and packed targets; returns its ``index.csv`` row (without slide)."""
    from PIL import Image

    pairs_dir = Path(pairs_dir)
    rgb = np.asarray(rgb)
    targets = np.asarray(targets).astype(bool)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise InputDataError(f"tile {tile_id}: RGB must be uint8 (H, W, 3), got {rgb.dtype} {rgb.shape}")
    if targets.shape != (len(CHANNEL_NAMES), *rgb.shape[:2]):
        raise InputDataError(f"tile {tile_id}: targets shape {targets.shape} does not match RGB")
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    _atomic(pairs_dir / "he" / f"{tile_id}.png", buf.getvalue())
    buf = io.BytesIO()
    np.savez_compressed(buf, bits=np.packbits(targets.reshape(targets.shape[0], -1), axis=1),
                        shape=np.array(targets.shape))
    _atomic(pairs_dir / "targets" / f"{tile_id}.npz", buf.getvalue())
    return {"tile_id": tile_id, "he": f"he/{tile_id}.png", "target": f"targets/{tile_id}.npz",
            "height": rgb.shape[0], "width": rgb.shape[1]}


def write_simulated_pairs(
    pairs_dir: str | os.PathLike[str],
    n_tiles: int,
    *,
    size: int = 256,
    mpp: float = 0.5,
    tiles_per_slide: int = 8,
    seed: int = 0,
    show_progress: bool = True,
) -> pd.DataFrame:
    """Renders ``n_tiles`` simulated pairs with :mod:`virtime.simulate.tissue` into ``pairs_dir``.

    Each simulated slide has its own random composition and scanner (stain jitter), so slides
    differ as real ones do and a slide-level split is meaningful.
    """
    from virtime._progress import progress
    from virtime.simulate.tissue import Scanner, random_composition, render_tissue

    pairs_dir = Path(pairs_dir)
    rng = np.random.default_rng(seed)
    rows = []
    comp = scanner = None
    with progress(range(n_tiles), desc="simulate pairs", unit="tile", enabled=show_progress) as bar:
        for k in bar:
            if k % tiles_per_slide == 0:
                comp, scanner = random_composition(rng), Scanner.random(rng)
            slide_id = f"sim{seed:03d}-{k // tiles_per_slide:04d}"
            rgb, targets, _ = render_tissue((size, size), comp, mpp=mpp, rng=rng, scanner=scanner)
            row = write_pair(pairs_dir, f"{slide_id}-{k % tiles_per_slide:03d}", rgb, targets)
            rows.append({**row, "slide_id": slide_id, "mpp": mpp})
    index = pd.DataFrame(rows)[[*_COLUMNS, "height", "width", "mpp"]]
    _atomic(pairs_dir / "index.csv", index.to_csv(index=False).encode())
    meta = {"format": PAIRS_FORMAT, "mpp": mpp, "channels": list(CHANNEL_NAMES),
            "source": "virtime.simulate.tissue", "seed": seed}
    _atomic(pairs_dir / "pairs.json", json.dumps(meta, indent=2).encode())
    return index


def read_index(pairs_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """The validated ``index.csv`` of a pairs folder."""
    path = Path(pairs_dir) / "index.csv"
    if not path.is_file():
        raise InputDataError(f"{path}: no index.csv in the pairs folder")
    index = pd.read_csv(path, dtype={"tile_id": str, "slide_id": str})
    missing = [c for c in _COLUMNS if c not in index.columns]
    if missing:
        raise InputDataError(f"{path}: missing columns {', '.join(missing)}")
    if index.empty:
        raise InputDataError(f"{path}: no tiles listed")
    if index.tile_id.duplicated().any():
        raise InputDataError(f"{path}: duplicate tile_id {index.tile_id[index.tile_id.duplicated()].iloc[0]}")
    meta = Path(pairs_dir) / "pairs.json"
    if meta.is_file():
        channels = json.loads(meta.read_text()).get("channels")
        if channels is not None and list(channels) != list(CHANNEL_NAMES):
            raise InputDataError(f"{meta}: channel order differs from the GigaTIME order")
    return index


def load_pair(pairs_dir: str | os.PathLike[str], row: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """``(rgb uint8 (H, W, 3), targets bool (23, H, W))`` of one index row."""
    from PIL import Image

    pairs_dir = Path(pairs_dir)
    he, tg = pairs_dir / str(row["he"]), pairs_dir / str(row["target"])
    try:
        with Image.open(he) as im:
            rgb = np.asarray(im.convert("RGB"))
    except (OSError, ValueError) as exc:
        raise InputDataError(f"{he}: cannot read H&E tile ({exc})") from exc
    try:
        with np.load(tg, allow_pickle=False) as z:
            if "bits" in z:
                shape = tuple(int(s) for s in z["shape"])
                n = int(np.prod(shape[1:]))
                targets = np.unpackbits(z["bits"], axis=1, count=n).reshape(shape).astype(bool)
            else:
                targets = np.asarray(z["targets"]).astype(bool)
    except (OSError, ValueError, KeyError) as exc:
        raise InputDataError(f"{tg}: cannot read targets ({exc})") from exc
    if targets.shape != (len(CHANNEL_NAMES), *rgb.shape[:2]):
        raise InputDataError(f"{tg}: targets shape {targets.shape} does not match {he} {rgb.shape}")
    return rgb, targets


def split_by_slide(index: pd.DataFrame, val_fraction: float = 0.2) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, validation) rows, whole slides on each side, ordered by a hash of slide_id."""
    slides = sorted(index.slide_id.astype(str).unique(),
                    key=lambda s: hashlib.sha256(s.encode()).hexdigest())
    n_val = int(round(len(slides) * val_fraction))
    if val_fraction > 0 and len(slides) > 1:
        n_val = min(max(n_val, 1), len(slides) - 1)
    val = set(slides[:n_val])
    is_val = index.slide_id.astype(str).isin(val)
    return index[~is_val].reset_index(drop=True), index[is_val].reset_index(drop=True)


@dataclass
class PairDataset(torch.utils.data.Dataset):
    """Tiles of a pairs folder as ``(rgb uint8 (H, W, 3), targets uint8 (23, H, W))`` tensors.

    ``crop`` takes a random (training) or central (``augment=False``) square; ``augment`` adds
    random flips and 90-degree rotations (stain jitter is applied per batch in the trainer).
    """

    pairs_dir: Path
    index: pd.DataFrame
    crop: int | None = None
    augment: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        self.pairs_dir = Path(self.pairs_dir)
        self._rng = np.random.default_rng(self.seed)
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if i not in self._cache:
            self._cache[i] = load_pair(self.pairs_dir, self.index.iloc[i])
        rgb, tg = self._cache[i]
        h, w = rgb.shape[:2]
        if self.crop is not None and (self.crop < h or self.crop < w):
            c = self.crop
            if self.augment:
                y0, x0 = self._rng.integers(0, h - c + 1), self._rng.integers(0, w - c + 1)
            else:
                y0, x0 = (h - c) // 2, (w - c) // 2
            rgb, tg = rgb[y0:y0 + c, x0:x0 + c], tg[:, y0:y0 + c, x0:x0 + c]
        if self.augment:
            k = int(self._rng.integers(4))
            rgb, tg = np.rot90(rgb, k, (0, 1)), np.rot90(tg, k, (1, 2))
            if self._rng.random() < 0.5:
                rgb, tg = rgb[:, ::-1], tg[:, :, ::-1]
        return (torch.from_numpy(np.array(rgb, dtype=np.uint8, order="C")),
                torch.from_numpy(np.array(tg, dtype=np.uint8, order="C")))
