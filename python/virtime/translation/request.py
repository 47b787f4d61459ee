"""What a translation request resolves to, checked before any work is done.

The model's geometry against the config (:func:`check_model`), the slide's mpp
(:func:`check_slide_mpp`), the output root (:func:`check_output_root`), the stain normalizer
(:func:`resolve_normalizer`) and the engine (:func:`translation_engine`). Callers that prepare a
slide ahead (:mod:`virtime.translation.prefetch`) or check a request up front (the CLI, the
cohort runner) use the same functions as :func:`~virtime.translation.translate`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from virtime.channels import CHANNEL_NAMES
from virtime.errors import InvalidArgumentError, InvalidMppError, ModelMismatchError, OutputError
from virtime.mpp import check_mpp
from virtime.translation.config import TranslateConfig

__all__ = ["check_model", "check_output_root", "check_slide_mpp", "resolve_normalizer",
           "slide_output_dir", "translation_engine"]


def slide_output_dir(out_root: str | os.PathLike[str], slide_id: str) -> Path:
    """The folder of ``slide_id``'s outputs under ``out_root``."""
    return Path(out_root) / slide_id


def check_model(model: Any, config: TranslateConfig) -> tuple[float, int, str]:
    """``(input mpp, window, weights hash)`` of ``model`` for ``config``: ModelMismatchError or
    InvalidArgumentError when the two do not fit (channels, mpp, a tile smaller than the window).
    Cheap: callers check before any work."""
    card = getattr(model, "card", None)
    if card is None:
        raise ModelMismatchError("model has no model card (load it with virtime.models.load)")
    if list(card.channels) != list(CHANNEL_NAMES):
        raise ModelMismatchError(
            f"model {card.weights_file or card.architecture} outputs channels {card.channels}, "
            f"not the 23 GigaTIME channels"
        )
    model_mpp = float(card.input_mpp)
    if config.model_mpp is not None and abs(config.model_mpp - model_mpp) > 0.01 * model_mpp:
        raise ModelMismatchError(
            f"model {card.weights_file or card.architecture} takes {model_mpp} um/px, "
            f"not the requested {config.model_mpp} um/px"
        )
    window = int(card.window)
    if config.tile_size % window and config.tile_size < window:
        raise InvalidArgumentError(f"tile size {config.tile_size} is smaller than the window {window}")
    return model_mpp, window, str(card.sha256)


def check_output_root(out_root: str | os.PathLike[str]) -> None:
    """Refuse an output root that exists and is not a folder (``-o`` naming a file), or that
    cannot be written (the folder, or the nearest existing one above it, is read-only)."""
    root = Path(out_root)
    if root.exists() and not root.is_dir():
        raise OutputError(f"{root}: exists and is not a folder (the output root must be a folder)")
    for folder in (root.absolute(), *root.absolute().parents):  # nearest existing folder
        if folder.exists():
            if not folder.is_dir():
                raise OutputError(f"{folder}: is a file, not a folder (in the output path {root})")
            if not os.access(folder, os.W_OK | os.X_OK):
                raise OutputError(f"{folder}: Permission denied (the output folder is not "
                                  f"writable)")
            break


def check_slide_mpp(slide: Any, config: TranslateConfig, model_mpp: float) -> float:
    """The slide's level-0 mpp, refused when implausible or too coarse for the model.

    A value from the slide's metadata must lie in ``config.mpp_range`` (an explicit
    ``config.mpp`` is the user's word and skips this check); the upsampling factor
    ``slide mpp / model mpp`` must not exceed ``config.max_upsample``. ``config.allow_mpp``
    skips both. Raises :class:`~virtime.errors.InvalidMppError` naming the value and its source.
    """
    mpp = float(slide.mpp)
    if config.allow_mpp:
        return mpp
    given = config.mpp is not None or bool(getattr(slide, "mpp_given", False))
    source = "given with --mpp" if given else "from the slide metadata (openslide.mpp-x)"
    if not given:
        check_mpp(mpp, path=slide.path, source=source, mpp_range=config.mpp_range,
                  advice="pass the true value with --mpp, or --allow-mpp to use it anyway")
    factor = mpp / float(model_mpp)
    if factor > config.max_upsample:
        raise InvalidMppError(
            f"{slide.path}: mpp {mpp:g} um/px {source} is {factor:.3g}x coarser than the "
            f"model's {model_mpp:g} um/px (limit {config.max_upsample:g}x): tiles would be "
            f"upsampled {factor:.3g}x, inventing detail and multiplying the tile count by "
            f"{factor * factor:.3g}; pass --allow-mpp to translate anyway"
        )
    return mpp


def resolve_normalizer(normalize: Any) -> Any:
    """The stain normalizer ``config.normalize`` names (None for ``"none"``), or the given one.

    A normalizer object is used as it is (fitted to the user's reference); the fingerprint
    hashes that reference, so outputs of another reference are not resumed or skipped.
    """
    if isinstance(normalize, str):
        if normalize.strip().lower() == "none":
            return None
        from virtime.stain import get_normalizer

        return get_normalizer(normalize)
    if getattr(normalize, "core", None) is None:  # the identity normalizer: nothing to do
        if str(getattr(normalize, "name", "")) == "none":
            return None
        raise InvalidArgumentError(
            f"normalize={normalize!r} is not a virtime stain normalizer (virtime.stain."
            f"get_normalizer(name), fitted with .fit(reference))")
    return normalize


def translation_engine(model: Any, config: TranslateConfig, device: str | None = None) -> Any:
    """The engine :func:`translate` builds for ``model`` and ``config`` (``device`` overrides
    ``config.device``): build it once and pass it as ``engine=`` to translate several slides
    without rebuilding it (CUDA graphs, ``torch.compile`` and TensorRT plans are per engine)."""
    from virtime.engines import create_engine

    return create_engine(model, backend=config.backend, precision=config.precision,
                         device=config.device if device is None else device,
                         cache_dir=config.cache_dir, max_batch=config.window_batch,
                         window=int(model.card.window), **config.engine_options)
