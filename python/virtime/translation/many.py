"""Several slides one after another, with the engine kept busy between them.

:func:`translate_slides` is what ``virtime translate a.svs b.svs ...`` runs. Beside calling
:func:`~virtime.translation.translate` for each slide it:

* builds the engine once (CUDA graphs, ``torch.compile`` and TensorRT plans are per engine);
* opens the next slide and detects its tissue ahead (and, on the device path, reads its first
  batches): :class:`~virtime.translation.prefetch.SlidePrefetcher`;
* runs each slide's finishing writes (tile table, masks, thumbnail, features, slide page,
  ``summary.json``) on one background thread while the next slide's tile loop runs; the slide's
  folder stays locked until they are done, and the results come out in order.

A slide that fails (a :class:`~virtime.errors.VirtimeError` other than an
:class:`~virtime.errors.OutputError`) is yielded with its error and the others go on; an
``OutputError`` (the output cannot be written) stops the run, after the writes already started
have finished. Outputs are those of one :func:`translate` call per slide.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from virtime.errors import OutputError, VirtimeError
from virtime.translation.config import TranslateConfig
from virtime.translation.result import TranslateResult

__all__ = ["translate_slides"]


def translate_slides(
    slides: Sequence[str | os.PathLike[str]],
    model: Any,
    output: str | os.PathLike[str],
    config: TranslateConfig = TranslateConfig(),  # noqa: B008 - frozen, never mutated
    *,
    embedder: Any | None = None,
    engine: Any | None = None,
) -> Iterator[tuple[Path, TranslateResult | VirtimeError]]:
    """Translate ``slides`` in order; yields ``(path, result or error)`` per slide, in order.

    ``engine``: one to use (else one is built for the run and closed at its end). ``embedder``
    as in :func:`~virtime.translation.translate`. See the module doc.
    """
    from virtime.translation.device_path import use_device_path
    from virtime.translation.prefetch import SlidePrefetcher
    from virtime.translation.request import translation_engine
    from virtime.translation.run import translate_slide

    paths = [Path(p) for p in slides]
    owns_engine = engine is None and len(paths) > 1
    if owns_engine:
        engine = translation_engine(model, config)
    read_ahead = 2 if engine is not None and embedder is None and use_device_path(engine, config) \
        else 0
    ahead = SlidePrefetcher(paths, mpp=config.mpp, model=model, config=config,
                            read_ahead=read_ahead)
    # One slide has nothing to overlap its writes with: translate() finishes it inline.
    finisher = ThreadPoolExecutor(1, thread_name_prefix="virtime-finish") if len(paths) > 1 \
        else None
    pending: tuple[Path, Future[TranslateResult]] | None = None
    try:
        for path in paths:
            try:
                got: Any = translate_slide(path, model, output, config, engine=engine,
                                           embedder=embedder, prepared=ahead.take(path),
                                           finisher=finisher)
            except OutputError:
                raise
            except VirtimeError as exc:
                got = exc
            if pending is not None:  # the previous slide's writes ran beside this slide's loop
                yield pending[0], _outcome(pending[1])
                pending = None
            if isinstance(got, Future):
                pending = (path, got)
            else:
                yield path, got
        if pending is not None:
            yield pending[0], _outcome(pending[1])
            pending = None
    finally:
        if finisher is not None:  # writes already started finish: nothing half-written
            finisher.shutdown(wait=True)
        ahead.close()
        if owns_engine:
            engine.close()


def _outcome(future: Future[TranslateResult]) -> TranslateResult | VirtimeError:
    """The finished slide's result, or its error (an OutputError is raised)."""
    try:
        return future.result()
    except OutputError:
        raise
    except VirtimeError as exc:
        return exc
