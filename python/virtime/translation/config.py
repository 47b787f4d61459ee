"""Settings of a whole-slide translation, one frozen dataclass passed down the pipeline."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["TranslateConfig"]


@dataclass(frozen=True)
class TranslateConfig:
    """How to translate a slide.

    Geometry follows the model card: tiles of ``tile_size`` pixels at the model's input mpp,
    split into the model's windows (256 for GigaTIME). ``overlap`` (model pixels, at most half a
    window) makes neighbouring tiles and windows overlap and blends them with cosine ramps;
    ``overlap=0`` is the official non-overlapping layout.

    Safety: ``lock_timeout`` is how long to wait for another run that holds the slide folder's
    lock (0: stop at once with a message naming it; None: wait for ever). A slide whose level-0
    mpp (from its metadata) lies outside ``mpp_range`` is refused, as is a slide coarser than
    ``max_upsample`` times the model's mpp (upsampled tiles invent detail, and the tile count
    explodes); an explicit ``mpp`` skips the range check (the user vouches for the value), and
    ``allow_mpp`` skips both.
    """

    backend: str = "auto"
    precision: str = "fp32"
    device: str | None = None
    batch_size: int = 8  # tiles per batch from the C++ batcher
    window_batch: int = 32  # windows per engine call (a batch of 8 tiles of 4 windows: one call)
    threads: int = 0  # batcher threads (0 = all cores)
    tile_size: int = 512
    overlap: int = 0
    min_tissue: float = 0.1
    output_mpp: float = 2.0
    normalize: str = "none"
    mpp: float | None = None  # level-0 mpp override for slides without metadata
    model_mpp: float | None = None  # the mpp the caller expects the model to take (checked)
    ome_tiff: bool = False
    thumbnail_channels: tuple[str, ...] = ("DAPI", "CD8", "CK")
    features: bool = True
    force: bool = False
    lock_timeout: float | None = 0.0  # seconds to wait for another run's lock (None: for ever)
    mpp_range: tuple[float, float] = (0.1, 2.0)  # plausible level-0 um/px from slide metadata
    max_upsample: float = 4.0  # largest slide mpp / model mpp accepted
    allow_mpp: bool = False  # skip both mpp checks
    show_progress: bool = True
    log_json: str | None = None
    cache_dir: str | None = None
    engine_options: dict[str, Any] = field(default_factory=dict)
    # Virtual single cells (virtime.cells): segment every tile's full-resolution probabilities and
    # write cells.parquet (+ cells.* slide features). An interrupted run is redone from the start.
    cells: bool = False
    # Peak memory (bytes) the batch sizes are chosen to fit (virtime.engines.memory); None: a
    # quarter of RAM, at most 4 GiB. batch_size / window_batch are then upper bounds.
    memory_budget: int | None = None
    # The device path (uint8 tiles up, post-processing on the engine's device, pooled uint8 down;
    # translation/device_path.py): None = when the engine is not on the CPU; True forces it (on
    # CPU too, with torch CPU tensors), False keeps the fused C++ CPU path.
    device_path: bool | None = None

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["thumbnail_channels"] = list(self.thumbnail_channels)
        return d
        d["mpp_range"] = list(self.mpp_range)
