"""Whole-slide translation: H&E slide in, virtual mIF (OME-Zarr), tile table and summary out.

Batcher (C++ worker threads: read, normalize, pack) → engine (windows of the model) → sigmoid,
per-tile statistics and pooling → a streaming canvas that writes finished row bands. The batcher
prepares the next batches while the engine runs (the GIL is released in the core), so the CPU
work around the model overlaps it.

Every output is written atomically; ``summary.json`` is written last and marks the slide done, so
a rerun skips finished slides (unless ``force``) and resumes an interrupted one from the last
completed canvas band. The rooms: :mod:`~virtime.translation.run` (one slide's run),
:mod:`~virtime.translation.loop` (the tile loop), :mod:`~virtime.translation.resume` (skip and
resume rules), :mod:`~virtime.translation.outputs` (the finishing writes).
"""

from __future__ import annotations

import os
from typing import Any

from virtime.translation.config import TranslateConfig
from virtime.translation.result import TranslateResult
from virtime.translation.run import translate_slide

__all__ = ["translate"]


def translate(
    slide: str | os.PathLike[str] | Any,
    model: Any,
    output: str | os.PathLike[str],
    config: TranslateConfig = TranslateConfig(),  # noqa: B008 - frozen, never mutated
    *,
    slide_id: str | None = None,
    engine: Any | None = None,
    embedder: Any | None = None,
) -> TranslateResult:
    """Translates one slide into ``output/<slide_id>/``.

    Parameters
    ----------
    slide
        The H&E slide: a path, or a :class:`virtime.slide.Slide` already open (used as it is,
        unless ``config.mpp`` asks for another mpp override).
    model
        A translator from :func:`virtime.models.load` (its card gives mpp, window, channels).
    output
        Output root; the slide's folder is ``output/<slide_id>`` (the slide id: ``slide_id``, or
        :func:`virtime.slide_ids.slide_id_from_path`).
    config
        See :class:`TranslateConfig`.
    engine
        An engine to reuse across slides (as cohort workers do); built from ``model`` otherwise.
    embedder
        A :class:`virtime.embed.joint.TileEmbedder`: Prov-GigaPath tile embeddings from the same
        tile reads, written to ``<slide folder>/embeddings``. The slide is then translated from
        the start (embeddings of an interrupted run's tiles are not kept).

    Notes
    -----
    The slide id is :func:`virtime.slide_ids.slide_id_from_path` unless given. The slide folder
    is locked for the run (:mod:`virtime.translation.lock`). A finished folder is skipped only
    when it was made from the same slide file (size and header hash) with the same fingerprint
    (:mod:`virtime.translation.fingerprint`); another fingerprint is redone with a warning, and
    another slide file is a :class:`~virtime.errors.SlideIdError` unless ``force``. An
    interrupted run resumes only with an identical fingerprint; otherwise it starts fresh, with a
    warning naming the fields that differ. A slide mpp outside ``config.mpp_range`` or too coarse
    for the model is refused (see :class:`TranslateConfig`). Errors writing the outputs (read-only
    folder, full disk) are :class:`~virtime.errors.OutputError` naming the path.
    """
    return translate_slide(slide, model, output, config, slide_id=slide_id, engine=engine,
                           embedder=embedder)
