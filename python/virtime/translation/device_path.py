"""The device path of the translation loop: uint8 tiles up, pooled uint8 blocks and tile statistics down.

When the engine runs on a GPU, the CPU should only read and decode: the C++ batcher writes uint8
RGB tiles ``(N, T, T, 3)`` (no float packing) straight into a bounded ring of pinned host buffers
(:meth:`DeviceTranslator.host_ring`; the batch names its slot, no host copy), each uploaded
asynchronously on a copy stream; a slot goes back to the batcher only once its upload event has
completed. On the device, with torch ops:

0. with a fitted stain normalizer, its torch twin (:mod:`~virtime.translation.device_stain`:
   the C++ normalizer's per-tile statistics and rounding) on the uploaded uint8 tiles;
1. the split into model windows (uint8 slices, a reshape for the official non-overlapping layout),
   ImageNet normalization with the C++ packer's constants (``v·scale + bias``, two roundings, as
   ``pp_pack_f32``), NHWC data handed to the engine as an NCHW ``channels_last`` view (or
   contiguous NCHW);
2. ``engine.run_tensor`` (float32 logits on the device);
3. sigmoid, blend weight, per-tile statistics of the blended tile (positive fraction and mean
   probability over the tile's core, as the fused C++ pass: windows accumulated in order, divided
   by the clamped weight sum), pooling of every window to the canvas grid (off-grid windows are
   zero-padded to the grid like :func:`~virtime.stitch.windows.pool_weighted`), and quantization
   of each window's pooled ratio ``Σw·p / Σw`` to ``floor(255·r + ½)``;
4. download of the uint8 blocks (``C·(h/f)²`` bytes per window, 23 KB for GigaTIME at 2 µm/px
   instead of 6 MB of logits) and the statistics, on a second copy stream.

The host adds ``(q/255)·Σw`` and ``Σw`` to the canvas, so the canvas matches the CPU path within one
grey level (each window's ratio is rounded once before blending), overlap and off-grid windows
included. Batch ``k+1`` is uploaded and computed while batch ``k``'s results are consumed; the only
waits are on a batch's download event (where its results are used) and on a ring slot's upload
event before it is refilled. With torch CPU tensors the same code runs synchronously (tests and
``TranslateConfig(device_path=True)``).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from virtime.errors import InvalidArgumentError
from virtime.stitch.window_geometry import WindowGeometry
from virtime.translation.timeline import Timeline

__all__ = ["DeviceBatchResult", "DeviceBatchStep", "DeviceTranslator", "add_blocks",
           "use_device_path"]

log = logging.getLogger(__name__)

# ImageNet constants as float32, exactly as cpp/src/image.cpp computes its packing constants.
_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
PACK_SCALE = (np.float32(1.0) / (np.float32(255.0) * _STD)).astype(np.float32)
PACK_BIAS = (-_MEAN / _STD).astype(np.float32)


def use_device_path(engine: Any, config: Any) -> bool:
    """The device path runs when the engine's device is not the CPU, or when forced by
    ``config.device_path`` (True: always; False: never; None: by the engine's device)."""
    forced = getattr(config, "device_path", None)
    if forced is not None:
        return bool(forced)
    return not str(getattr(engine, "device", "cpu")).startswith("cpu")


@dataclass
class DeviceBatchResult:
    """Host results of one batch.

    Attributes
    ----------
    blocks
        One entry per window, in tile-major window order: ``(q, ox, oy, ws)`` with ``q`` the
        ``(C, hb, wb)`` uint8 pooled ratio, ``(ox, oy)`` its canvas origin and ``ws`` the
        ``(hb, wb)`` float32 pooled weight of that grid phase.
    positive_fraction, mean_probability
        ``(n, C)`` float64 tile statistics.
    tile_probabilities
        With :attr:`DeviceTranslator.emit_tiles` (``--cells``): each tile's blended
        full-resolution probabilities ``Σ_k w·σ(l_k) / Σ_k w`` as uint8 ``rint(255·p)``, exactly
        what :func:`~virtime.cells.collector.tile_probabilities` and the collector's uint8 store
        make of the same logits on the host; else None.
    """

    blocks: list[tuple[NDArray[np.uint8], int, int, NDArray[np.float32]]]
    positive_fraction: NDArray[np.float64]
    mean_probability: NDArray[np.float64]
    tile_probabilities: NDArray[np.uint8] | None = None  # (n, C, T, T) ×255, with emit_tiles


class _Pending:
    """A submitted batch: device work queued; :meth:`result` waits for its download only."""

    def __init__(self, done: Any, fetch: Any) -> None:
        self._done, self._fetch = done, fetch

    def result(self) -> DeviceBatchResult:
        if self._done is not None:
            self._done.synchronize()  # the one wait: these results are consumed now
        return self._fetch()


class DeviceTranslator:
    """Uploads uint8 tiles, runs the engine and post-processes on the engine's device.

    Parameters
    ----------
    engine
        An engine with ``run_tensor`` (see :class:`virtime.engines.Engine`).
    *geometry, **geometry_kw
        ``weight, factor, origins, tile_size, core[, threshold]`` (positional or by name) or one
        :class:`~virtime.stitch.window_geometry.WindowGeometry`.
    ring
        Host staging buffers: the slots of :meth:`host_ring` (pinned on CUDA); bounds host memory
        and the batches in flight.
    normalizer
        A fitted stain normalizer (:mod:`virtime.stain`) applied on the device to the uploaded
        tiles by its torch twin, or None.
    channels_last
        Hand the engine NHWC data as a ``channels_last`` view (True, no copy) or contiguous NCHW.
    timeline
        Where stage times go (a fresh one by default).
    """

    def __init__(
        self,
        engine: Any,
        *geometry: Any,
        ring: int = 3,
        channels_last: bool = True,
        timeline: Timeline | None = None,
        normalizer: Any = None,
        **geometry_kw: Any,
    ) -> None:
        import torch

        self._torch = torch
        self.engine = engine
        self.device = torch.device(str(getattr(engine, "device", "cpu")))
        self.cuda = self.device.type == "cuda"
        g = WindowGeometry.of(*geometry, **geometry_kw)
        self.geometry = g
        self.weight, self.factor, self.origins = g.weight, g.factor, g.origins
        self.h, self.w = self.weight.shape
        self.k = len(self.origins)
        self.tile_size, self.core, self.threshold = g.tile_size, g.core, g.threshold
        if int(ring) < 1:
            raise InvalidArgumentError(f"the device path needs a ring of >= 1 slot, got {ring}")
        from virtime.translation.device_stain import device_normalizer

        self.stain = device_normalizer(normalizer, self.device)
        self.channels_last = bool(channels_last)
        self.timeline = timeline if timeline is not None else Timeline(self.device)
        dev = self.device
        self._windows = g.torch(dev)  # weights, blending and pooling on the device
        self._scale = torch.from_numpy(PACK_SCALE).to(dev)
        self._bias = torch.from_numpy(PACK_BIAS).to(dev)
        self._grid_split = g.grid_split
        self._ring_size = int(ring)
        self._ring: list[Any] = []  # pinned staging copies for tiles not from host_ring
        self._ring_free: list[Any] = []
        self._slot = 0
        self._host: list[Any] = []  # host_ring's slots (torch tensors; numpy views go to the batcher)
        self._host_np: list[NDArray[np.uint8]] = []
        self._host_event: list[Any] = []  # per slot: the event of its last upload (CUDA)
        if self.cuda:
            self._up = torch.cuda.Stream(dev)
            self._down = torch.cuda.Stream(dev)

    # -- geometry -------------------------------------------------------------------------------
    def phase_weight(self, px: int, py: int) -> tuple[NDArray[np.float32], Any]:
        """Pooled weight ``Σw`` of a window at grid phase ``(px, py)`` (host and device copies)."""
        return self.geometry.phase_weight(px, py), self._windows.phase_weight(px, py)

    # -- staging --------------------------------------------------------------------------------
    @property
    def ring_size(self) -> int:
        return self._ring_size

    def host_ring(self, batch_size: int) -> list[NDArray[np.uint8]]:
        """The ring the batcher writes tiles into: ``ring`` uint8 arrays ``(batch_size, T, T, 3)``,
        views of pinned torch tensors on CUDA (uploaded from directly), plain arrays on the CPU.

        Pass them as ``iter_batches(..., ring=...)`` and each batch's ``slot`` to :meth:`submit`;
        hand a slot back with :meth:`recycle` (which waits for its upload where needed).
        """
        torch = self._torch
        shape = (int(batch_size), self.tile_size, self.tile_size, 3)
        if not self._host or tuple(self._host[0].shape) != shape:
            self._host = [torch.empty(shape, dtype=torch.uint8, pin_memory=self.cuda)
                          for _ in range(self._ring_size)]
            self._host_np = [t.numpy() for t in self._host]
            self._host_event = [None] * self._ring_size
        return self._host_np

    def upload_done(self, slot: int, wait: bool = False) -> bool:
        """Whether the last upload from ring ``slot`` has completed (waits for it when ``wait``)."""
        ev = self._host_event[slot] if slot < len(self._host_event) else None
        if ev is None:
            return True
        if wait:
            ev.synchronize()  # the slot is about to be refilled: its copy must have read it
        elif not ev.query():
            return False
        self._host_event[slot] = None
        return True

    def recycle(self, held: deque[Any]) -> None:
        """Hand back the ring slots of ``held`` batches (oldest first) whose upload has completed;
        when every slot is held, wait for the oldest, so the batcher can always go on."""
        while held and self.upload_done(held[0].slot, wait=len(held) >= self._ring_size):
            held.popleft().release()

    def _stage(self, rgb: NDArray[np.uint8], slot: int | None = None) -> Any:
        """uint8 tiles on the device; on CUDA through a pinned ring slot on the copy stream (the
        batcher's own slot when ``slot`` names one of :meth:`host_ring`, else a staging copy)."""
        torch = self._torch
        if slot is not None:
            if not (0 <= slot < len(self._host_np)) or \
                    rgb.ctypes.data != self._host_np[slot].ctypes.data:
                raise InvalidArgumentError(f"tiles are not in ring slot {slot} of this translator")
            host = self._host[slot][: len(rgb)]
            if not self.cuda:
                return host  # the slot itself: read before submit returns
            dev, self._host_event[slot] = self._upload(host)  # pinned: no host copy
            return dev
        host = torch.from_numpy(np.ascontiguousarray(rgb))
        if not self.cuda:
            return host
        n = host.shape[0]
        if len(self._ring) < self._ring_size:
            self._ring.append(None)
            self._ring_free.append(None)
        i = self._slot
        self._slot = (self._slot + 1) % self._ring_size
        slot, free = self._ring[i], self._ring_free[i]
        if free is not None:
            free.synchronize()  # the slot's previous upload has read it
        if slot is None or slot.shape[0] < n or slot.shape[1:] != host.shape[1:]:
            slot = torch.empty(tuple(host.shape), dtype=torch.uint8).pin_memory()
            self._ring[i] = slot
        with self.timeline.host("read"):  # host copy into pinned memory (part of staging)
            slot[:n].copy_(host)
        dev, self._ring_free[i] = self._upload(slot[:n])
        return dev

    def _upload(self, pinned: Any) -> tuple[Any, Any]:
        """Copy pinned host tiles to the device on the copy stream; the compute stream waits for
        it. Returns the device tensor and the upload's event (the host buffer is free after it)."""
        torch = self._torch
        with torch.cuda.stream(self._up), self.timeline.span("upload", self._up):
            dev = pinned.to(self.device, non_blocking=True)
            ev = torch.cuda.Event()
            ev.record(self._up)
        compute = torch.cuda.current_stream(self.device)
        compute.wait_event(ev)
        dev.record_stream(compute)
        return dev, ev

    def prepare(self, u8: Any) -> Any:
        """Model input ``(n·k, 3, h, w)`` float32 from uint8 tiles ``(n, T, T, 3)`` on the device."""
        torch = self._torch
        n = u8.shape[0]
        h, w = self.h, self.w
        if self._grid_split is not None:
            ny, nx = self._grid_split
            win = u8.view(n, ny, h, nx, w, 3).permute(0, 1, 3, 2, 4, 5).reshape(n * self.k, h, w, 3)
        else:
            win = torch.stack([u8[:, oy : oy + h, ox : ox + w, :] for ox, oy in self.origins.tolist()],
                              dim=1).reshape(n * self.k, h, w, 3)
        x = win.to(torch.float32)
        x.mul_(self._scale).add_(self._bias)  # two roundings, like the C++ packer
        x = x.permute(0, 3, 1, 2)  # NCHW view of NHWC memory: channels_last
        return x if self.channels_last else x.contiguous()

    # -- post-processing ------------------------------------------------------------------------
    #: Also compute and download each tile's blended full-resolution probabilities as uint8
    #: (``DeviceBatchResult.tile_probabilities``, for the cell segmentation on the CPU).
    emit_tiles: bool = False
    _tiles_out: Any = None  # this batch's uint8 tiles, from _postprocess to _download

    def _tiles_u8(self, pv: Any) -> Any:
        """``(n, C, T, T)`` uint8 ``rint(255·clip(Σw·σ / Σw))`` from the weighted windows ``pv``
        ``(n, k, C, h, w)``: the host's ``tile_probabilities`` then the collector's encoding."""
        return self._quantize(self._windows.blend(pv))

    def _quantize(self, p: Any) -> Any:
        """``rint(clip(p, 0, 1)·255)`` as uint8 (half to even, as numpy's ``rint``)."""
        torch = self._torch
        return torch.round(p.clamp(0.0, 1.0).mul_(255.0)).to(torch.uint8)

    def postprocess(self, logits: Any, tile_xy: NDArray[np.int64]) -> tuple[list[Any], Any, Any]:
        """Device tensors: per grid phase ``(window indices, (px, py), uint8 blocks)``, and the
        tile statistics ``pos`` (int64) and ``psum`` (float64), each ``(n, C)``."""
        with self._torch.inference_mode():
            return self._postprocess(logits, np.asarray(tile_xy, dtype=np.int64).reshape(-1, 2))

    def _postprocess(self, logits: Any, tile_xy: NDArray[np.int64]) -> tuple[list[Any], Any, Any]:
        torch = self._torch
        n = len(tile_xy)
        k, h, w, f = self.k, self.h, self.w, self.factor
        c = int(logits.shape[1])
        p = torch.sigmoid_(logits) if logits.dtype == torch.float32 else torch.sigmoid(logits.float())
        tiles = None
        if self.emit_tiles and self.geometry.spans_tile:  # the host takes σ itself here
            tiles = self._quantize(p.view(n, c, h, w))
        self._windows.weigh(p)  # w·σ(l), in place: the logits are ours
        if self.emit_tiles and tiles is None:  # before p is padded and pooled in place below
            tiles = self._tiles_u8(p.view(n, k, c, h, w))
        self._tiles_out = tiles
        # Blended core of every tile: windows added in order, divided by the clamped Σw.
        acc = self._windows.blend(p.view(n, k, c, h, w), size=self.core)
        pos = (acc > self.threshold).sum(dim=(2, 3))
        psum = acc.sum(dim=(2, 3), dtype=torch.float64)
        # Pooling by grid phase, then each window's ratio quantized to the canvas' uint8.
        xy = tile_xy[:, None, :] + self.origins[None, :, :]  # (n, k, 2) model pixels
        phase = (xy % f).reshape(-1, 2)
        keys = phase[:, 0] * f + phase[:, 1]
        groups = []
        for key in np.unique(keys):
            idx = np.flatnonzero(keys == key)
            px, py = int(phase[idx[0], 0]), int(phase[idx[0], 1])
            sel = p if len(idx) == n * k else p.index_select(
                0, torch.from_numpy(idx).to(p.device))
            sel = self._windows.pool(sel, px, py)  # off-grid windows zero-padded to the grid
            ws_dev = self._windows.phase_weight(px, py)
            q = torch.floor(sel.div_(ws_dev).mul_(255.0).add_(0.5)).nan_to_num_(0.0)
            groups.append((idx, (px, py), q.clamp_(0.0, 255.0).to(torch.uint8)))
        return groups, pos, psum

    # -- one batch ------------------------------------------------------------------------------
    def submit(self, rgb: NDArray[np.uint8], tile_xy: NDArray[np.int64],
               slot: int | None = None) -> _Pending:
        """Queue one batch of uint8 tiles ``(n, T, T, 3)`` at model-pixel origins ``(n, 2)``
        (``slot``: the :meth:`host_ring` slot the batcher wrote them into, uploaded from directly;
        after this returns it is read only by that upload, see :meth:`upload_done`)."""
        torch = self._torch
        tile_xy = np.asarray(tile_xy, dtype=np.int64).reshape(-1, 2)
        if rgb.ndim != 4 or rgb.shape[1:] != (self.tile_size, self.tile_size, 3) or \
                rgb.dtype != np.uint8 or len(rgb) != len(tile_xy):
            raise InvalidArgumentError(
                f"tiles must be uint8 (n, {self.tile_size}, {self.tile_size}, 3) with n origins, "
                f"got {rgb.dtype} {rgb.shape} and {len(tile_xy)} origins")
        stream = torch.cuda.current_stream(self.device) if self.cuda else None
        with torch.inference_mode():
            u8 = self._stage(rgb, slot)
            with self.timeline.span("compute", stream):
                if self.stain is not None:  # the C++ normalizer's twin, on the uploaded tiles
                    u8, _ = self.stain(u8)
                logits = self.engine.run_tensor(self.prepare(u8))
            with self.timeline.span("postprocess", stream):
                groups, pos, psum = self.postprocess(logits, tile_xy)
            del logits
            return self._download(groups, pos, psum, tile_xy)

    def _download(self, groups: list[Any], pos: Any, psum: Any,
                  tile_xy: NDArray[np.int64]) -> _Pending:
        torch = self._torch
        done = None
        tiles, self._tiles_out = self._tiles_out, None
        if self.cuda:
            compute = torch.cuda.current_stream(self.device)
            self._down.wait_stream(compute)
            host_groups = []
            with torch.cuda.stream(self._down), self.timeline.span("download", self._down):
                for idx, ph, q in groups:
                    q.record_stream(self._down)
                    hq = torch.empty(tuple(q.shape), dtype=q.dtype, pin_memory=True)
                    hq.copy_(q, non_blocking=True)
                    host_groups.append((idx, ph, hq))
                hpos = torch.empty(tuple(pos.shape), dtype=pos.dtype, pin_memory=True)
                hpsum = torch.empty(tuple(psum.shape), dtype=psum.dtype, pin_memory=True)
                for src, dst in ((pos, hpos), (psum, hpsum)):
                    src.record_stream(self._down)
                    dst.copy_(src, non_blocking=True)
                if tiles is not None:  # uint8: 23·T² bytes a tile (a quarter of float32)
                    tiles.record_stream(self._down)
                    htiles = torch.empty(tuple(tiles.shape), dtype=tiles.dtype, pin_memory=True)
                    htiles.copy_(tiles, non_blocking=True)
                    tiles = htiles
                done = torch.cuda.Event()
                done.record(self._down)
            groups, pos, psum = host_groups, hpos, hpsum
        return _Pending(done, lambda: self._assemble(groups, pos, psum, tile_xy, tiles))

    def _assemble(self, groups: list[Any], pos: Any, psum: Any,
                  tile_xy: NDArray[np.int64], tiles: Any = None) -> DeviceBatchResult:
        n, k, f = len(tile_xy), self.k, self.factor
        area = float(self.core * self.core)
        blocks: list[Any] = [None] * (n * k)
        for idx, (px, py), q in groups:
            qn = q.numpy()
            ws, _ = self.phase_weight(px, py)
            for row, flat in enumerate(idx.tolist()):
                i, j = divmod(flat, k)
                x = int(tile_xy[i, 0] + self.origins[j, 0])
                y = int(tile_xy[i, 1] + self.origins[j, 1])
                blocks[flat] = (qn[row], x // f, y // f, ws)
        return DeviceBatchResult(blocks, pos.numpy().astype(np.float64) / area,
                                 psum.numpy().astype(np.float64) / area,
                                 None if tiles is None else tiles.numpy())


def add_blocks(canvas: Any, result: DeviceBatchResult) -> None:
    """Add a batch's quantized blocks to the host canvas as ``((q/255)·Σw, Σw)`` sums."""
    for q, ox, oy, ws in result.blocks:
        canvas.add_pooled(q.astype(np.float32) * (ws / np.float32(255.0)), ws, ox, oy)


class DeviceBatchStep:
    """The device step of :func:`~virtime.translation.loop.run_tile_loop` for a
    :class:`~virtime.translation.run.SlideRun`: uint8 tiles into the translator's pinned ring,
    batch ``k+1`` in flight while batch ``k`` is written (``depth`` batches submitted ahead).

    With ``run.cells`` (``--cells``) each tile's blended probabilities are computed on the device
    and downloaded as uint8 (``23·T²`` bytes a tile) for the cell segmentation on the CPU.
    :meth:`close` stores the per-stage timeline in ``run.timings["timeline"]``.
    """

    def __init__(self, run: Any, config: Any, depth: int = 2) -> None:
        self.run, self.config, self.depth = run, config, int(depth)
        # Stain normalization on the device unless the embedder needs the normalized tiles.
        normalizer = run.normalizer
        self.on_device = run.embedder is None and \
            getattr(normalizer, "name", None) in ("macenko", "reinhard")
        self.translator = DeviceTranslator(
            run.engine, run.weight, run.canvas.factor, run.origins, config.tile_size, run.stride,
            channels_last=bool(getattr(run.engine, "channels_last", True)), ring=depth + 2,
            normalizer=normalizer if self.on_device else None,
        )
        self.translator.emit_tiles = run.cells is not None
        self.timeline = self.translator.timeline
        self.held: deque[Any] = deque()  # batches whose ring slot is still being uploaded from

    def batches(self) -> Iterator[Any]:
        """The read-ahead batches (translation/prefetch.py) if they fit, then the batcher's,
        written into the translator's ring; a slot goes back once its upload is done."""
        from virtime.batcher import iter_batches
        from virtime.translation.prefetch import take_read_ahead, with_read_ahead

        run, config, translator = self.run, self.config, self.translator
        host_norm = None if self.on_device else run.normalizer
        head = take_read_ahead(run.slide, run.grid, run.todo, config, host_norm)
        rest = run.todo if head is None else run.todo[len(head.tiles):]
        it = with_read_ahead(head, None if not len(rest) else lambda: iter_batches(
            run.slide, run.grid, normalizer=host_norm, batch_size=config.batch_size,
            threads=config.threads, emit_uint8=True, pack="none", tiles=rest,
            ring=translator.host_ring(config.batch_size)))
        if head is not None:
            run.timings["read_ahead_s"] = head.seconds  # spent before this slide, off the loop
            run.jlog.emit(event="read_ahead", slide_id=run.slide_id, batches=len(head.batches),
                          tiles=len(head.tiles))
        while True:
            translator.recycle(self.held)  # slots whose upload completed go back to the batcher
            with self.timeline.host("read"):  # waiting for the batcher's worker threads
                batch = next(it, None)
            if batch is None:
                return
            yield batch

    def submit(self, batch: Any) -> _Pending:
        ticket = self.translator.submit(batch.rgb, self.run.tile_xy_model[batch.tile_index],
                                        slot=batch.slot)
        if batch.slot is not None:  # a ring slot, held until its upload is done
            self.held.append(batch)
        return ticket

    def collect(self, batch: Any, ticket: _Pending) -> tuple[NDArray[Any], NDArray[Any]]:
        res = ticket.result()
        if self.run.cells is not None:  # segmented on the CPU, with a halo of the neighbours
            self.run.cells.add(batch.tile_index, res.tile_probabilities)
        with self.timeline.host("write"):
            add_blocks(self.run.canvas, res)
        return res.positive_fraction, res.mean_probability

    def close(self, wall: float) -> None:
        self.run.timings["timeline"] = self.timeline.summary(wall)
