"""Streaming low-resolution canvas: weighted window predictions in, finished OME-Zarr row bands out.

Memory is bounded by the slide's *width*, never its height: float32 sums are kept only for the
open row bands (``chunk`` output rows each). Tiles arrive in row-major order, so once the pipeline
says no future tile reaches above model row ``y`` (:meth:`StreamingCanvas.flush_until`), every
band that ends above ``y`` is final: it is normalised, converted to uint8, written to level 0 of
the OME-Zarr, recorded in the run manifest and freed.

Value of output pixel ``o`` (block ``B_o`` of ``factor x factor`` model pixels)::

    canvas[c, o] = Σ_k Σ_{i∈B_o} w_k(i) p_k[c, i]  /  Σ_k Σ_{i∈B_o} w_k(i)     (0 where Σ w = 0)
    stored       = floor(255 · canvas + ½)                                     (uint8)

This equals the W-weighted block mean of the full-resolution blend ``P = Σ w_k p_k / W``,
``W = Σ_k w_k``; where ``W`` is constant on a block (overlap 0, or inside the partition-of-unity
zones of the ramps) it is exactly the plain mean of ``P`` over the block.

Resume: bands are written in order and each is recorded only after its chunks are on disk
(zarr's LocalStore writes each chunk to a temporary name and renames it), so after a ``kill -9``
the complete bands are a prefix. Reopening with ``resume=True`` ignores contributions to them and
reports :attr:`StreamingCanvas.resume_y`, the first model row the pipeline must revisit.
Derived outputs are computed from the bands as they are written, never by reading level 0 back:
the pyramid levels by a built-in :class:`~virtime.stitch.observers.PyramidBuilder`, and whatever
else a caller attaches (:meth:`StreamingCanvas.attach`: the thumbnail's level, the slide
features). On resume the bands an earlier run finished are read back once and replayed to them.

A canvas made with a ``fingerprint`` (everything that determines its values: model, engine,
normalization, geometry ...) resumes only a partial canvas with the same fingerprint and shape;
with ``restart_on_mismatch`` any other partial canvas is discarded with a warning naming the
differing fields (:attr:`StreamingCanvas.restarted_because`), otherwise resuming it is an error.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from virtime.channels import CHANNELS, Channel, get_channel
from virtime.errors import InputDataError, InvalidArgumentError
from virtime.io import RunManifest
from virtime.io.atomic import CommitOnExit
from virtime.stitch import omezarr
from virtime.stitch.observers import BandObserver, PyramidBuilder
from virtime.stitch.windows import pool_weighted

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = [
    "MANIFEST_SUFFIX",
    "StreamingCanvas",
    "canvas_fingerprint",
    "canvas_finished",
    "canvas_shape",
    "manifest_path",
    "to_uint8",
]

log = logging.getLogger(__name__)

MANIFEST_SUFFIX = ".manifest.json"
_BANDS = "level0_bands"
_MAX_PENDING_BANDS = 4


def canvas_shape(model_shape_yx: tuple[int, int], factor: int) -> tuple[int, int]:
    """Output canvas ``(h, w)`` covering a ``model_shape_yx`` extent: ceil division by ``factor``."""
    h, w = model_shape_yx
    return (-(-int(h) // factor), -(-int(w) // factor))


def manifest_path(path: str | os.PathLike[str]) -> Path:
    """The run manifest of the canvas at ``path``: a sidecar ``<path>.manifest.json``.

    Beside the Zarr, not inside it, so Zarr and NGFF tools listing the group see no foreign file.
    """
    p = Path(path)
    return p.with_name(p.name + MANIFEST_SUFFIX)


def canvas_finished(path: str | os.PathLike[str]) -> bool:
    """Whether a completed canvas exists at ``path`` (so a rerun without --force skips the slide)."""
    manifest = manifest_path(path)
    if not manifest.is_file() or not (Path(path) / ".zgroup").is_file():
        return False
    return RunManifest.load(manifest).finished


def canvas_fingerprint(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The fingerprint recorded in the manifest of the canvas at ``path`` (None: none there)."""
    manifest = manifest_path(path)
    if not manifest.is_file():
        return None
    try:
        fp = RunManifest.load(manifest).params.get("fingerprint")
    except InputDataError:
        return None
    return fp if isinstance(fp, dict) else None


def to_uint8(ratio: NDArray[np.floating]) -> NDArray[np.uint8]:
    """Probability in [0, 1] to ``floor(255·p + ½)`` computed in float64, clipped to [0, 255].

    Float64 (one channel at a time, to bound the temporary) so the rounding of a float32
    probability does not depend on float32 products landing just below a half.
    """
    ratio = np.asarray(ratio)
    out = np.empty(ratio.shape, dtype=np.uint8)
    for c in range(ratio.shape[0]) if ratio.ndim == 3 else [Ellipsis]:
        v = np.floor(ratio[c].astype(np.float64) * 255.0 + 0.5)
        out[c] = np.clip(np.nan_to_num(v, nan=0.0), 0.0, 255.0)
    return out


def _resolve_channels(channels: Sequence[Channel | str]) -> tuple[Channel, ...]:
    return tuple(c if isinstance(c, Channel) else get_channel(c) for c in channels)


class StreamingCanvas(CommitOnExit):
    """Accumulate weighted window probabilities into a bounded-memory OME-Zarr canvas.

    Parameters
    ----------
    path
        The ``.ome.zarr`` folder to write (its manifest is :func:`manifest_path` beside it).
    shape_yx
        Output canvas shape (see :func:`canvas_shape`).
    factor
        Model pixels per output pixel (``output_mpp / model_mpp``, integer >= 1).
    mpp
        Output microns per pixel, written to the NGFF scale transforms.
    channels
        Channel records or names in output order (default: the 23 checkpoint channels).
    chunk
        Chunk edge in output pixels; also the height of an accumulation band.
    resume
        Reopen an unfinished canvas at ``path`` with identical settings and keep its complete
        bands; otherwise any canvas at ``path`` is replaced.
    name
        Image name in the metadata.
    extra_metadata
        JSON-serialisable dict stored as ``.zattrs["virtime"]`` (model hash, overlap ...).
    fingerprint
        JSON-serialisable dict of everything that determines the canvas values; stored in the
        manifest and compared on resume.
    restart_on_mismatch
        On resume, discard (with a warning) a partial canvas whose settings or fingerprint
        differ, instead of raising :class:`~virtime.errors.InvalidArgumentError`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        shape_yx: tuple[int, int],
        *,
        factor: int = 8,
        mpp: float = 2.0,
        channels: Sequence[Channel | str] = CHANNELS,
        chunk: int = 256,
        resume: bool = False,
        name: str = "virtual mIF",
        extra_metadata: dict[str, Any] | None = None,
        fingerprint: Mapping[str, Any] | None = None,
        restart_on_mismatch: bool = False,
    ) -> None:
        h, w = (int(shape_yx[0]), int(shape_yx[1]))
        if h <= 0 or w <= 0:
            raise InvalidArgumentError(f"{path}: canvas shape must be positive, got {shape_yx}")
        if int(factor) < 1 or chunk < 1:
            raise InvalidArgumentError(f"factor and chunk must be >= 1, got {factor}, {chunk}")
        self.path = Path(path)
        self.shape_yx = (h, w)
        self.factor = int(factor)
        self.mpp = float(mpp)
        self.channels = _resolve_channels(channels)
        self.chunk = int(chunk)
        self.name = name
        self.extra_metadata = dict(extra_metadata or {})
        self.n_bands = -(-h // self.chunk)
        params = {
            "shape_yx": list(self.shape_yx),
            "factor": self.factor,
            "mpp": self.mpp,
            "chunk": self.chunk,
            "channels": [c.name for c in self.channels],
        }
        if fingerprint is not None:
            params["fingerprint"] = json.loads(json.dumps(dict(fingerprint)))
        mpath = manifest_path(self.path)
        can_resume = resume and mpath.is_file() and (self.path / ".zgroup").is_file()
        #: Fields in which a discarded earlier partial canvas differed (empty: none discarded).
        self.restarted_because: list[str] = []
        if can_resume and restart_on_mismatch:
            diff = _resume_diff(mpath, params)
            if diff:
                log.warning("%s: not resuming the earlier partial run, it differs in %s; "
                            "starting fresh", self.path, _describe_diff(diff))
                self.restarted_because = [k for k, _, _ in diff]
                can_resume = False
        if can_resume:
            self._manifest = RunManifest.open(mpath, params, resume=True)
            self._group = omezarr.open_ome_zarr(self.path, mode="r+")
            _remove_partials(self.path)
        else:
            _clear_previous(self.path)
            mpath.unlink(missing_ok=True)  # a fresh run must not inherit completed bands
            self._group = omezarr.create_pyramid(
                self.path, len(self.channels), self.shape_yx, self.chunk
            )
            self._manifest = RunManifest.create(mpath, params)
        done = set(self._manifest.completed(_BANDS))
        self._first_open = 0
        while self._first_open in done:
            self._first_open += 1
        self._resumed_until = self._first_open  # bands < this were finished by an earlier run
        self._bands: dict[int, tuple[NDArray[np.float32], NDArray[np.float32]]] = {}
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="canvas-writer")
        # The observers (pyramid, thumbnail, features) on a second thread: in band order like
        # the writer, but beside it, so neither waits for the other on a many-core machine.
        self._observing = ThreadPoolExecutor(max_workers=1, thread_name_prefix="canvas-observers")
        #: Seconds each background thread has worked (level-0 writes; observers): on a fast GPU
        #: either may bound the loop, and the loop's own ``write`` wait does not say which.
        self.thread_seconds = {"band_writer": 0.0, "observers": 0.0}
        self._pending: list[Future[None]] = []
        self._writer_failed = False
        self.n_levels = omezarr.n_pyramid_levels(self.shape_yx, self.chunk)
        #: Streams levels 1.. from the bands; its listeners see every level's rows as made.
        self.pyramid = PyramidBuilder(self._group, self.shape_yx, self.chunk, self.n_levels)
        self._observers: list[BandObserver] = [self.pyramid]
        self._replayed = self._resumed_until == 0
        if self._first_open:
            log.info("%s: resuming at band %d of %d", self.path, self._first_open, self.n_bands)

    # ------------------------------------------------------------------ state
    @property
    def finished(self) -> bool:
        """True once :meth:`close` completed (now or in an earlier run)."""
        return self._manifest.finished

    @property
    def resume_y(self) -> int:
        """First model row not yet final: the pipeline restarts with tiles reaching below it."""
        return self._first_open * self.chunk * self.factor

    @property
    def open_bands(self) -> int:
        """Number of row bands holding accumulators now."""
        return len(self._bands)

    @property
    def accumulator_nbytes(self) -> int:
        """Bytes held by open accumulators: ``(C + 1) x chunk x width x 4`` per band."""
        return sum(a.nbytes + b.nbytes for a, b in self._bands.values())

    # ------------------------------------------------------------------ input
    def add(self, probs: NDArray[Any], x: int, y: int, weight: NDArray[Any] | None = None) -> None:
        """Add one window's probabilities ``(C, h, w)`` at model-pixel origin ``(x, y)``.

        ``weight`` ``(h, w)`` defaults to ones (the official unblended layout).
        """
        probs = np.asarray(probs)
        if probs.ndim != 3 or probs.shape[0] != len(self.channels):
            raise InvalidArgumentError(
                f"{self.path}: window must be ({len(self.channels)}, h, w), got {probs.shape}"
            )
        if weight is None:
            weight = np.ones(probs.shape[1:], dtype=np.float32)
        wp, ws, ox, oy = pool_weighted(probs, weight, self.factor, int(x), int(y))
        self.add_pooled(wp, ws, ox, oy)

    def add_pooled(self, wp: NDArray[Any], ws: NDArray[Any], ox: int, oy: int) -> None:
        """Add pre-pooled sums (``Σ w·p`` ``(C, h, w)`` and ``Σ w`` ``(h, w)``) at output ``(ox, oy)``.

        For callers that pool elsewhere (the fused C++ pass, the device path). Parts outside the
        canvas are cropped; parts in bands finished by an earlier run are ignored; a part in a band
        flushed by this run means tiles came out of order: an error.
        """
        wp = np.asarray(wp, dtype=np.float32)
        ws = np.asarray(ws, dtype=np.float32)
        if wp.ndim != 3 or wp.shape[0] != len(self.channels) or ws.shape != wp.shape[1:]:
            raise InvalidArgumentError(
                f"{self.path}: pooled sums must be (C, h, w) and (h, w), got {wp.shape}, {ws.shape}"
            )
        H, W = self.shape_yx
        _, ph, pw = wp.shape
        x0, x1 = max(ox, 0), min(ox + pw, W)
        y0, y1 = max(oy, 0), min(oy + ph, H)
        if x0 >= x1 or y0 >= y1:
            return
        ch = self.chunk
        for band in range(y0 // ch, (y1 - 1) // ch + 1):
            if band < self._resumed_until:
                continue
            if band < self._first_open:
                raise InvalidArgumentError(
                    f"{self.path}: a window at output row {oy} reaches band {band}, already "
                    f"flushed; tiles must come in row-major order and flush_until must not pass "
                    f"rows that later tiles touch"
                )
            b0, b1 = max(y0, band * ch), min(y1, (band + 1) * ch)
            acc, wacc = self._band(band)
            sy = slice(b0 - oy, b1 - oy)
            sx = slice(x0 - ox, x1 - ox)
            acc[:, b0 - band * ch : b1 - band * ch, x0:x1] += wp[:, sy, sx]
            wacc[b0 - band * ch : b1 - band * ch, x0:x1] += ws[sy, sx]

    def _band(self, band: int) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        if band not in self._bands:
            rows = min(self.chunk, self.shape_yx[0] - band * self.chunk)
            self._bands[band] = (
                np.zeros((len(self.channels), rows, self.shape_yx[1]), dtype=np.float32),
                np.zeros((rows, self.shape_yx[1]), dtype=np.float32),
            )
        return self._bands[band]

    # ------------------------------------------------------------------ observers
    def attach(self, observer: BandObserver) -> None:
        """Add an observer of the level-0 bands (before the first band is written)."""
        self._check_not_started()
        self._observers.append(observer)

    def add_level_listener(self, listener: Any) -> None:
        """``listener(level, y0, rows)`` for the rows of every pyramid level as they are made."""
        self._check_not_started()
        self.pyramid.listeners.append(listener)

    def _check_not_started(self) -> None:
        if self._first_open > self._resumed_until or (self._replayed and self._resumed_until):
            raise InvalidArgumentError(f"{self.path}: observers must be attached before the "
                                       f"first band is written")

    def _replay_resumed(self) -> None:
        """Feed the observers the bands an earlier run finished (read back once, in order)."""
        if self._replayed:
            return
        self._replayed = True
        for band in range(self._resumed_until):
            y0 = band * self.chunk
            y1 = min(y0 + self.chunk, self.shape_yx[0])
            self._submit(self._observing, self._replay_band, y0, y1,
                         [o.prepare(y0, y1) for o in self._observers])

    def _replay_band(self, y0: int, y1: int, prepared: list[Any]) -> None:
        self._observe(y0, np.asarray(self._group["0"][:, y0:y1, :]), prepared)

    def _observe(self, y0: int, rows: NDArray[np.uint8], prepared: list[Any]) -> None:
        t0 = time.perf_counter()
        for observer, prep in zip(self._observers, prepared):
            observer.on_band(y0, rows, prep)
        self.thread_seconds["observers"] += time.perf_counter() - t0

    def _submit(self, pool: ThreadPoolExecutor, fn: Any, *args: Any) -> None:
        """Queue work for the writer or observer thread (in order; a few bands pending)."""
        self._raise_writer_errors()
        while len(self._pending) >= 2 * _MAX_PENDING_BANDS:  # bound memory if the disk is slow
            self._pending.pop(0).result()
        self._pending.append(pool.submit(fn, *args))

    # ------------------------------------------------------------------ output
    def flush_until(self, y: int) -> int:
        """Declare that no future window touches model rows ``< y``; write bands above it.

        Returns the number of bands written. Pass the next tile's ``y`` (row-major order).
        """
        final_rows = int(y) // self.factor
        written = 0
        while self._first_open < self.n_bands:
            end = min((self._first_open + 1) * self.chunk, self.shape_yx[0])
            if end > final_rows:
                break
            self._flush_band(self._first_open)
            self._first_open += 1
            written += 1
        return written

    def _flush_band(self, band: int) -> None:
        y0 = band * self.chunk
        rows = min(self.chunk, self.shape_yx[0] - y0)
        acc = self._bands.pop(band, None)
        if acc is None:  # nothing fell here (background): write zeros, so a torn rerun is clean
            out = np.zeros((len(self.channels), rows, self.shape_yx[1]), dtype=np.uint8)
        else:
            sums, weights = acc
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = np.where(weights > 0, sums / weights, np.float32(0.0))
            out = to_uint8(ratio)
        # Compression, disk writes and the observers (pyramid, thumbnail, features) run on one
        # background thread, in band order, so the engine is not kept waiting; a band enters the
        # manifest only once its chunks are written.
        self._replay_resumed()
        prepared = [o.prepare(y0, y0 + rows) for o in self._observers]
        self._submit(self._writer, self._write_band, band, y0, out)
        self._submit(self._observing, self._observe, y0, out, prepared)

    def _write_band(self, band: int, y0: int, out: NDArray[np.uint8]) -> None:
        t0 = time.perf_counter()
        omezarr.writable_level(self._group, 0)[:, y0 : y0 + out.shape[1], :] = out  # empty too
        self._manifest.mark_complete(_BANDS, band)
        self.thread_seconds["band_writer"] += time.perf_counter() - t0

    def _raise_writer_errors(self, wait: bool = False) -> None:
        """Re-raise a failed background write; with ``wait``, block until all writes are done."""
        still: list[Future[None]] = []
        pending, self._pending = self._pending, []
        for i, fut in enumerate(pending):
            if wait or fut.done():
                try:
                    fut.result()
                except BaseException:
                    self._pending = still + pending[i + 1 :]  # this one is reported by raising
                    self._writer_failed = True
                    raise
            else:
                still.append(fut)
        self._pending = still

    def close(self) -> None:
        """Flush every band, wait for its writes and observers (the pyramid is built as the bands
        come), write NGFF metadata, mark the run finished.

        Idempotent; a no-op on a canvas finished by an earlier run.
        """
        if self._manifest.finished:
            return
        self._replay_resumed()
        self.flush_until(self.shape_yx[0] * self.factor)
        self._raise_writer_errors(wait=True)
        self._writer.shutdown(wait=True)
        self._observing.shutdown(wait=True)
        if not self.pyramid.complete:  # every band went through it: a bug if not
            raise InvalidArgumentError(f"{self.path}: the pyramid was not completed from the "
                                       f"bands")
        omezarr.write_ngff_metadata(
            self._group,
            n_levels=self.n_levels,
            channels=self.channels,
            mpp=self.mpp,
            name=self.name,
            extra={"factor": self.factor, **self.extra_metadata},
        )
        self._manifest.mark_finished()

    def __enter__(self) -> Self:
        # Leaving ``with`` on an error aborts (CommitOnExit): the canvas stays resumable rather
        # than finished with missing tiles.
        return self

    def abort(self) -> None:
        """Stop after an error: finish the band writes already queued (they are complete bands,
        and a resumed run relies on the manifest being settled), drop open accumulators."""
        self._bands.clear()
        self._writer.shutdown(wait=True)
        self._observing.shutdown(wait=True)
        for fut in self._pending:
            if fut.exception() is not None:  # after a raised write error: its echoes, not news
                level = logging.DEBUG if self._writer_failed else logging.ERROR
                log.log(level, "%s: a band write failed: %s", self.path, fut.exception())
        self._pending = []


def _flat_params(params: Mapping[str, Any]) -> dict[str, Any]:
    flat = {k: v for k, v in params.items() if k != "fingerprint"}
    fp = params.get("fingerprint")
    flat.update(fp if isinstance(fp, dict) else {"fingerprint": fp})
    return flat


def _resume_diff(mpath: Path, params: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """``(field, earlier, now)`` for every setting in which the manifest at ``mpath`` differs."""
    try:
        old = RunManifest.load(mpath).params
    except InputDataError:
        return [("manifest", "unreadable", "new")]
    was, now = _flat_params(old), _flat_params(json.loads(json.dumps(dict(params))))
    return [(k, was.get(k), now.get(k)) for k in sorted(set(was) | set(now))
            if was.get(k) != now.get(k)]


def _describe_diff(diff: list[tuple[str, Any, Any]]) -> str:
    def short(v: Any) -> str:
        s = repr(v)
        return s if len(s) <= 24 else s[:22] + "…"

    return ", ".join(f"{k} ({short(a)} -> {short(b)})" for k, a, b in diff)


def _remove_partials(path: Path) -> None:
    """Delete temporary chunk files a killed LocalStore write left behind."""
    for tmp in path.rglob("*.partial"):
        tmp.unlink(missing_ok=True)


def _clear_previous(path: Path) -> None:
    """Remove an earlier canvas at ``path``, refusing to delete anything that is not one."""
    if not path.exists():
        return
    if path.is_dir() and ((path / ".zgroup").is_file() or manifest_path(path).is_file()):
        shutil.rmtree(path)
        return
    raise InvalidArgumentError(
        f"{path}: exists and is not a virtime OME-Zarr canvas; not replacing"
    )
