"""Settings of a whole-slide translation, one frozen dataclass passed down the pipeline.

A :class:`TranslateConfig` is made of the settings it passes on: ``engine``
(:class:`~virtime.engines.config.EngineConfig`), ``tiling`` (:class:`~virtime.tiling.TilingConfig`)
and ``slide_features`` (:class:`~virtime.features.config.FeaturesConfig`), plus its own output
and safety settings. Flat keywords and attributes still work: ``TranslateConfig(tile_size=256,
backend="torch").tiling.tile_size == 256`` and ``config.tile_size`` reads it back.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, ClassVar

from virtime._nested import flat_dict, flat_views
from virtime.engines.config import EngineConfig
from virtime.features.config import FeaturesConfig
from virtime.mpp import MPP_RANGE
from virtime.tiling import TilingConfig

__all__ = ["EngineConfig", "FeaturesConfig", "TilingConfig", "TranslateConfig"]

_ENGINE = tuple(f.name for f in fields(EngineConfig))
_TILING = ("tile_size", "overlap", "min_tissue")
_FEATURES = tuple(f.name for f in fields(FeaturesConfig))

#: The flat keys of :meth:`TranslateConfig.as_dict` (and ``summary.json["config"]``), in order.
_AS_DICT = ("backend", "precision", "device", "batch_size", "window_batch", "threads",
            "tile_size", "overlap", "min_tissue", "output_mpp", "normalize", "mpp", "model_mpp",
            "ome_tiff", "thumbnail_channels", "features", "force", "lock_timeout", "mpp_range",
            "max_upsample", "allow_mpp", "show_progress", "log_json", "cache_dir",
            "engine_options", "cells", "memory_budget", "device_path", *_FEATURES,
            "retry_failed")


@flat_views  # flat read-only views of the parts, and the keyword __init__ that sets them
@dataclass(frozen=True, init=False)
class TranslateConfig:
    """How to translate a slide.

    Parts: ``engine`` (backend, precision, device, batch sizes, threads, cache, engine options,
    memory budget, device path), ``tiling`` (tile_size, overlap, min_tissue; its ``target_mpp``
    is replaced by the model's input mpp) and ``slide_features`` (bin_um, threshold,
    max_failed_share of ``features.parquet``). Every field of a part can also be given as a flat
    keyword (``TranslateConfig(tile_size=256, backend="torch")``) and read as a flat attribute
    (``config.tile_size``); a flat keyword changes the part given beside it.

    Geometry follows the model card: tiles of ``tile_size`` pixels at the model's input mpp,
    split into the model's windows (256 for GigaTIME). ``overlap`` (model pixels, at most half a
    window) makes neighbouring tiles and windows overlap and blends them with cosine ramps;
    ``overlap=0`` is the official non-overlapping layout.

    ``normalize``: ``"none"``, a normalizer's name (``"macenko"``, ``"reinhard"``: fitted to
    the built-in reference) or a normalizer object already fitted to your reference
    (``get_normalizer("macenko").fit(reference)``).

    Safety: ``lock_timeout`` is how long to wait for another run that holds the slide folder's
    lock (0: stop at once with a message naming it; None: wait for ever). A slide whose level-0
    mpp (from its metadata) lies outside ``mpp_range`` is refused, as is a slide coarser than
    ``max_upsample`` times the model's mpp (upsampled tiles invent detail, and the tile count
    explodes); an explicit ``mpp`` skips the range check (the user vouches for the value), and
    ``allow_mpp`` skips both.
    """

    _FLAT: ClassVar[dict[str, tuple[str, ...]]] = {"engine": _ENGINE, "tiling": _TILING, "slide_features": _FEATURES}

    engine: EngineConfig = field(default_factory=EngineConfig)
    tiling: TilingConfig = field(default_factory=TilingConfig)
    slide_features: FeaturesConfig = field(default_factory=FeaturesConfig)
    output_mpp: float = 2.0
    normalize: Any = "none"  # a name, or a fitted normalizer (virtime.stain)
    mpp: float | None = None  # level-0 mpp override for slides without metadata
    model_mpp: float | None = None  # the mpp the caller expects the model to take (checked)
    ome_tiff: bool = False
    thumbnail_channels: tuple[str, ...] = ("DAPI", "CD8", "CK")
    features: bool = True
    force: bool = False
    # A finished slide with failed tiles is translated again (without force, nothing else redone).
    retry_failed: bool = False
    lock_timeout: float | None = 0.0  # seconds to wait for another run's lock (None: for ever)
    mpp_range: tuple[float, float] = MPP_RANGE  # plausible level-0 um/px (virtime.mpp)
    max_upsample: float = 4.0  # largest slide mpp / model mpp accepted
    allow_mpp: bool = False  # skip both mpp checks
    show_progress: bool = True
    log_json: str | None = None
    # Virtual single cells (virtime.cells): segment every tile's full-resolution probabilities and
    # write cells.parquet (+ cells.* slide features). An interrupted run is redone from the start.
    cells: bool = False

    if TYPE_CHECKING:  # the signature IDEs and type checkers read; flat_views builds the same one
        def __init__(
            self, *, backend: str = "auto", precision: str = "fp32", device: str | None = None,
            batch_size: int = 8, window_batch: int = 32, threads: int = 0,
            cache_dir: str | None = None, engine_options: dict[str, Any] = ...,
            memory_budget: int | None = None, device_path: bool | None = None,
            tile_size: int = 512, overlap: int = 0, min_tissue: float = 0.1, bin_um: float = 64.0,
            threshold: float = 0.5, max_failed_share: float = 0.05, output_mpp: float = 2.0,
            normalize: Any = "none", mpp: float | None = None, model_mpp: float | None = None,
            ome_tiff: bool = False, thumbnail_channels: tuple[str, ...] = ("DAPI", "CD8", "CK"),
            features: bool = True, force: bool = False, retry_failed: bool = False,
            lock_timeout: float | None = 0.0, mpp_range: tuple[float, float] = MPP_RANGE,
            max_upsample: float = 4.0, allow_mpp: bool = False, show_progress: bool = True,
            log_json: str | None = None, cells: bool = False, engine: EngineConfig = ...,
            tiling: TilingConfig = ..., slide_features: FeaturesConfig = ...,
        ) -> None: ...

    @property
    def normalize_name(self) -> str:
        """``normalize`` as a name (a normalizer object's ``name``)."""
        n = self.normalize
        return n if isinstance(n, str) else str(getattr(n, "name", type(n).__name__))

    def tiling_for(self, model_mpp: float) -> TilingConfig:
        """The tile grid's settings at the model's input mpp."""
        from dataclasses import replace

        return replace(self.tiling, target_mpp=float(model_mpp))

    def as_dict(self) -> dict[str, Any]:
        """The flat settings (what ``summary.json`` records as ``config``), JSON-ready."""
        d = flat_dict(self, _AS_DICT)
        d["normalize"] = self.normalize_name
        d["thumbnail_channels"] = list(self.thumbnail_channels)
        d["mpp_range"] = list(self.mpp_range)
        d["engine_options"] = dict(self.engine_options)
        return d
