"""Tile embeddings taken during translation (``virtime translate --embed``): the slide is read once.

The translator's tiles (512 px at 0.25 µm/px for GigaTIME) cover the same 128 µm as Prov-GigaPath's
256-px tiles at 0.5 µm/px, so each translated tile is box-averaged by the integer ratio of the two
resolutions (exactly the area resampling the batcher would do), centre-cropped to the encoder's
224 px, ImageNet-normalized and embedded. The result is written as :func:`embed_slide` writes it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from virtime.embed.pipeline import (
    EmbedConfig,
    EmbedResult,
    check_cpu_allowed,
    encode_slide,
    make_engine,
    write_embeddings,
)
from virtime.errors import InputDataError, InvalidArgumentError

__all__ = ["TileEmbedder"]

_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
_STD = np.array([0.229, 0.224, 0.225], np.float32)


class TileEmbedder:
    """Receives the RGB tiles of another pass over a slide and embeds them (see module docstring).

    Protocol used by :func:`virtime.translate`: ``start`` once the tile geometry is known, ``add``
    per batch of uint8 tiles, ``finish`` to encode the slide and write ``out_dir``, ``close``.
    """

    def __init__(self, tile_encoder: Any, config: EmbedConfig = EmbedConfig(),
                 slide_encoder: Any = None) -> None:
        self.tile_encoder = tile_encoder
        self.slide_encoder = slide_encoder
        self.config = config
        self._engine: Any = None
        self._factor = 1
        self._embeds: list[np.ndarray] = []
        self._index: list[np.ndarray] = []

    def start(self, tile_size: int, tile_mpp: float, n_tiles: int, device: str = "cpu") -> None:
        """Checks that a tile maps onto one encoder tile and builds the engine."""
        ratio = self.config.target_mpp / tile_mpp
        factor = round(ratio)
        if factor < 1 or abs(ratio - factor) > 1e-6 or tile_size != factor * self.config.tile_size:
            raise InvalidArgumentError(
                f"--embed needs translation tiles that cover one {self.config.tile_size}-px tile "
                f"at {self.config.target_mpp} um/px; got {tile_size} px at {tile_mpp} um/px "
                f"(use --tile-size {int(self.config.tile_size * ratio)})"
            )
        check_cpu_allowed(self.tile_encoder, n_tiles, device, self.config.allow_slow)
        self._factor = factor
        self._embeds, self._index = [], []
        self._engine = make_engine(self.tile_encoder, self.config, device)

    def add(self, rgb: np.ndarray, tile_index: np.ndarray) -> None:
        """Embeds a batch of translated tiles ``(n, T, T, 3)`` uint8."""
        if len(rgb) == 0:
            return
        f, size = self._factor, self.config.tile_size
        x = rgb.astype(np.float32)
        if f > 1:  # box average = area resampling for an integer factor, then the batcher's rounding
            n = len(x)
            x = np.rint(x.reshape(n, size, f, size, f, 3).mean(axis=(2, 4)))
        crop = self.tile_encoder.config.img_size
        lo = (size - crop) // 2
        x = x[:, lo:lo + crop, lo:lo + crop]
        x = ((x / np.float32(255) - _MEAN) / _STD).transpose(0, 3, 1, 2)
        self._embeds.append(self._engine.run(np.ascontiguousarray(x, np.float32)).reshape(len(x), -1))
        self._index.append(np.asarray(tile_index))

    def finish(self, out_dir: str | os.PathLike[str], slide_path: str, grid: Any,
               mpp0: float) -> EmbedResult:
        """Slide embedding (when a slide encoder was given) and the output tables."""
        import pandas as pd

        if not self._embeds:
            raise InputDataError(f"{slide_path}: no tiles were embedded")
        idx = np.concatenate(self._index)
        emb = np.concatenate(self._embeds).astype(np.float32)
        # Official coordinates: pixels at the encoder's 0.5 um/px, from the level-0 origin.
        coords = np.rint(grid.xy[idx] * mpp0 / self.config.target_mpp).astype(np.float64)
        tiles = pd.DataFrame({
            "x": grid.xy[idx, 0], "y": grid.xy[idx, 1],
            "col": grid.colrow[idx, 0], "row": grid.colrow[idx, 1],
            "coord_x": coords[:, 0], "coord_y": coords[:, 1],
            "tissue_fraction": grid.tissue_fraction[idx],
        })
        slide_emb = layers = None
        if self.slide_encoder is not None:
            slide_emb, layers = encode_slide(self.slide_encoder, emb, coords, self.config.all_layers)
        result = EmbedResult(emb, coords, tiles, slide_emb, layers, None, [])
        write_embeddings(Path(out_dir), slide_path, result, self.tile_encoder, self.config,
                         self.slide_encoder)
        return result

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
            self._engine = None
