"""Embedding a whole slide: tissue -> 256-px tiles at 0.5 um/px -> tile encoder -> slide encoder.

The tiles come from the same C++ batcher as translation and run through the same engine protocol
(torch, ONNX Runtime, TensorRT); each 256-px ImageNet-normalized tile is centre-cropped to 224 px
(the official transform resizes to 256, a no-op here, then crops 224). Outputs in ``output``:

* ``tile_embeddings.parquet``: one row per tile: level-0 ``x, y``; grid ``col, row``;
  ``coord_x, coord_y`` (pixels at 0.5 um/px, what the slide encoder sees); ``tissue_fraction``;
  ``embedding`` (fixed-size list of float32).
* ``slide_embedding.parquet``: one row: ``slide``, ``n_tiles``, ``embedding`` and, with
  ``all_layers``, ``layer_0 ... layer_<depth>`` (official ``layer_i_embed``).
* ``embed_manifest.json``: what was done, with model hashes.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from virtime._nested import flat_dict, flat_views
from virtime.errors import InputDataError, InvalidArgumentError
from virtime.slide_ids import slide_id_from_path

__all__ = ["CPU_GFLOPS_ESTIMATE", "EmbedConfig", "EmbedResult", "check_cpu_allowed", "embed_slide",
           "encode_slide", "make_engine", "write_embeddings"]

logger = logging.getLogger(__name__)

#: Rough sustained fp32 throughput of a desktop CPU, used only to tell the user how long it takes.
CPU_GFLOPS_ESTIMATE = 100.0
#: Tile encoders above this size are refused on CPU without ``allow_slow``.
CPU_PARAM_LIMIT = 200_000_000


_EMBED_ENGINE = ("backend", "precision", "device", "batch_size", "threads", "cache_dir")
_EMBED_TILING = ("target_mpp", "tile_size", "min_tissue")


def _embed_engine() -> Any:
    from virtime.engines.config import EngineConfig

    return EngineConfig(batch_size=32)  # tiles per engine call


def _embed_tiling() -> Any:
    from virtime.tiling import TilingConfig

    return TilingConfig(target_mpp=0.5, tile_size=256)


@flat_views  # flat read-only views of the parts, and the keyword __init__ that sets them
@dataclass(frozen=True, init=False)
class EmbedConfig:
    """How to embed a slide (defaults follow the official Prov-GigaPath pipeline).

    Parts, shared with :class:`~virtime.translation.TranslateConfig`: ``engine``
    (:class:`~virtime.engines.config.EngineConfig`: backend, precision, device, ``batch_size``
    = tiles per engine call (32), reader ``threads``, ``cache_dir``) and ``tiling``
    (:class:`~virtime.tiling.TilingConfig`: 256-px tiles at 0.5 um/px, ``min_tissue``). Their
    fields can be given and read flat too (``EmbedConfig(device="cpu").device``).
    """

    _FLAT: ClassVar[dict[str, tuple[str, ...]]] = {"engine": _EMBED_ENGINE, "tiling": _EMBED_TILING}

    engine: Any = field(default_factory=_embed_engine)
    tiling: Any = field(default_factory=_embed_tiling)
    all_layers: bool = False
    allow_slow: bool = False
    show_progress: bool = True

    if TYPE_CHECKING:  # the signature IDEs and type checkers read; flat_views builds the same one
        def __init__(
            self, *, backend: str = "auto", precision: str = "fp32", device: str | None = None,
            batch_size: int = 32, threads: int = 0, cache_dir: str | None = None,
            target_mpp: float = 0.5, tile_size: int = 256, min_tissue: float = 0.1,
            all_layers: bool = False, allow_slow: bool = False, show_progress: bool = True,
            engine: Any = ..., tiling: Any = ...,
        ) -> None: ...

    def as_dict(self) -> dict[str, Any]:
        """The flat settings (what ``embed_manifest.json`` records), JSON-ready."""
        d = flat_dict(self, ("backend", "precision", "device", "batch_size", "threads",
                             "target_mpp", "tile_size", "min_tissue", "all_layers", "allow_slow",
                             "cache_dir", "show_progress"))
        d["progress"] = None  # a key of the embed_manifest.json format (always null)
        return d


@dataclass
class EmbedResult:
    """What :func:`embed_slide` produced."""

    tile_embeddings: np.ndarray  # (n, D) float32
    coords: np.ndarray  # (n, 2) pixels at 0.5 um/px
    tiles: Any  # pandas DataFrame of the tile rows (without the embedding)
    slide_embedding: np.ndarray | None  # (D_slide,)
    layer_embeddings: np.ndarray | None  # (depth + 1, D_slide)
    out_dir: Path | None
    failures: list[Any]


def _resolve_device(device: str | None) -> str:
    from virtime.engines.base import cuda_available

    return device or ("cuda" if cuda_available() else "cpu")


def check_cpu_allowed(encoder: Any, n_tiles: int, device: str, allow_slow: bool) -> None:
    """Refuse the billion-parameter encoder on a CPU unless the user said it may be slow."""
    from virtime.embed.tile_encoder import tile_encoder_flops

    if not device.startswith("cpu") or allow_slow:
        return
    params = sum(p.numel() for p in encoder.parameters())
    if params < CPU_PARAM_LIMIT:
        return
    gflop = tile_encoder_flops(encoder.config) / 1e9
    hours = n_tiles * gflop / CPU_GFLOPS_ESTIMATE / 3600
    raise InvalidArgumentError(
        f"refusing to run the {params / 1e9:.2f} B-parameter tile encoder on CPU: it needs "
        f"~{gflop:.0f} GFLOP per tile, so this slide's {n_tiles} tiles would take ~{hours:.1f} h "
        f"even at {CPU_GFLOPS_ESTIMATE:.0f} GFLOP/s; run on a GPU (--device cuda) or pass "
        "--allow-slow to do it anyway"
    )


def make_engine(encoder: Any, config: EmbedConfig, device: str) -> Any:
    from virtime.embed.onnx import ensure_tile_encoder_onnx
    from virtime.embed.tile_encoder import TileEmbeddingHead
    from virtime.engines import create_engine, default_cache_dir, resolve_backend

    backend = resolve_backend(config.backend, device, config.precision)
    window = encoder.config.img_size
    if backend == "torch":
        model: Any = TileEmbeddingHead(encoder)
    else:  # ONNX Runtime / TensorRT read our exported graph (N,3,224,224) -> (N,D,1,1)
        cache = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
        model = str(ensure_tile_encoder_onnx(encoder, cache))
    return create_engine(model, backend=backend, precision=config.precision, device=device,
                         cache_dir=config.cache_dir, max_batch=config.batch_size, window=window)


def encode_slide(
    slide_encoder: Any, tile_embeddings: np.ndarray, coords: np.ndarray, all_layers: bool = False
) -> tuple[np.ndarray, np.ndarray | None]:
    """``(slide embedding (D,), per-layer (depth+1, D) or None)`` from a slide's tiles."""
    import torch

    if len(tile_embeddings) == 0:
        raise InputDataError("no tile embeddings to encode (no tissue tiles?)")
    param = next(slide_encoder.parameters())
    x = torch.as_tensor(np.asarray(tile_embeddings, np.float32), device=param.device)[None]
    c = torch.as_tensor(np.asarray(coords, np.float32), device=param.device)[None]
    with torch.inference_mode():
        final = slide_encoder(x, c)[0].float().cpu().numpy()
        layers = None
        if all_layers:
            out = slide_encoder(x, c, all_layers=True)
            layers = np.stack([o[0].float().cpu().numpy() for o in out])
    return final, layers


def _embedding_column(values: np.ndarray) -> Any:
    import pyarrow as pa

    values = np.ascontiguousarray(values, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), int(values.shape[1]))


def embed_slide(
    slide: Any,
    tile_encoder: Any,
    output: str | os.PathLike[str] | None = None,
    config: EmbedConfig = EmbedConfig(),
    slide_encoder: Any = None,
) -> EmbedResult:
    """Embed every tissue tile of ``slide`` (a path or :class:`virtime.slide.Slide`) and the slide.

    With ``output`` (a folder) the embeddings and the manifest are written there.

    Raises :class:`InvalidArgumentError` for a billion-parameter encoder on CPU without
    ``config.allow_slow`` (the message gives the estimated hours).
    """
    import pandas as pd

    from virtime._progress import progress
    from virtime.batcher import iter_batches
    from virtime.slide import Slide
    from virtime.tiling import make_tile_grid
    from virtime.tissue import detect_tissue

    if not isinstance(slide, Slide):
        slide = Slide(slide)
    size, crop = config.tile_size, tile_encoder.config.img_size
    if crop > size:
        raise InvalidArgumentError(f"tile_size {size} is smaller than the encoder input {crop}")
    grid = make_tile_grid(
        slide, config.tiling, detect_tissue(slide),
    )
    device = _resolve_device(config.device)
    check_cpu_allowed(tile_encoder, len(grid), device, config.allow_slow)
    if len(grid) == 0:
        raise InputDataError(f"{slide.path}: no tissue tiles to embed")
    engine = make_engine(tile_encoder, config, device)
    lo = (size - crop) // 2
    embeds, index, failures = [], [], []
    try:
        with progress(total=len(grid), desc=f"embed {Path(str(slide.path)).name}", unit="tile",
                      enabled=config.show_progress) as bar:
            for batch in iter_batches(slide, grid, batch_size=config.batch_size,
                                      threads=config.threads, emit_uint8=False, pack="float32"):
                failures.extend(batch.failures)
                if len(batch):
                    x = np.ascontiguousarray(batch.tensor[:, :, lo:lo + crop, lo:lo + crop])
                    embeds.append(engine.run(x).reshape(len(batch), -1))
                    index.append(batch.tile_index)
                bar.update(len(batch) + len(batch.failures))
    finally:
        engine.close()
    if not embeds:
        raise InputDataError(f"{slide.path}: every tile failed to read ({failures[:3]})")
    tile_idx = np.concatenate(index)
    emb = np.concatenate(embeds).astype(np.float32)
    colrow = grid.colrow[tile_idx]
    coords = (colrow * size).astype(np.float64)  # official coordinates: pixels at 0.5 um/px
    tiles = pd.DataFrame({
        "x": grid.xy[tile_idx, 0], "y": grid.xy[tile_idx, 1],
        "col": colrow[:, 0], "row": colrow[:, 1],
        "coord_x": coords[:, 0], "coord_y": coords[:, 1],
        "tissue_fraction": grid.tissue_fraction[tile_idx],
    })
    slide_emb = layers = None
    if slide_encoder is not None:
        slide_emb, layers = encode_slide(slide_encoder, emb, coords, config.all_layers)
    result = EmbedResult(emb, coords, tiles, slide_emb, layers, None, failures)
    if output is not None:
        write_embeddings(output, str(slide.path), result, tile_encoder, config, slide_encoder)
    return result


def write_embeddings(
    output: str | os.PathLike[str],
    slide_path: str,
    result: EmbedResult,
    tile_encoder: Any,
    config: EmbedConfig,
    slide_encoder: Any = None,
) -> Path:
    """Writes ``tile_embeddings.parquet``, ``slide_embedding.parquet`` and the manifest."""
    import pyarrow as pa

    from virtime import __version__
    from virtime.engines.hashing import model_hash
    from virtime.io import atomic_write_json, write_parquet

    emb, tiles, failures = result.tile_embeddings, result.tiles, result.failures
    slide_emb, layers = result.slide_embedding, result.layer_embeddings
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        b"virtime_version": __version__.encode(),
        b"tile_encoder_sha256": model_hash(tile_encoder).encode(),
        b"slide": slide_path.encode(),
    }
    table = pa.Table.from_pandas(tiles, preserve_index=False)
    table = table.append_column("embedding", _embedding_column(emb))
    write_parquet(table.replace_schema_metadata({**(table.schema.metadata or {}), **meta}),
                  out / "tile_embeddings.parquet", model_hash=meta[b"tile_encoder_sha256"].decode())
    manifest: dict[str, Any] = {
        "slide": slide_path, "n_tiles": len(emb), "n_failed": len(failures),
        "tile_encoder_sha256": meta[b"tile_encoder_sha256"].decode(),
        "config": config.as_dict(), "virtime_version": __version__,
        "tile_embeddings": "tile_embeddings.parquet",
    }
    if slide_emb is not None:
        cols: dict[str, Any] = {
            "slide": pa.array([slide_id_from_path(slide_path)]), "n_tiles": pa.array([len(emb)]),
            "embedding": _embedding_column(slide_emb[None]),
        }
        if layers is not None:
            for i, row in enumerate(layers):
                cols[f"layer_{i}"] = _embedding_column(row[None])
        slide_meta = {**meta, b"slide_encoder_sha256": model_hash(slide_encoder).encode()}
        write_parquet(pa.table(cols).replace_schema_metadata(slide_meta),
                      out / "slide_embedding.parquet",
                      model_hash=slide_meta[b"slide_encoder_sha256"].decode())
        manifest["slide_embedding"] = "slide_embedding.parquet"
        manifest["slide_encoder_sha256"] = slide_meta[b"slide_encoder_sha256"].decode()
    atomic_write_json(out / "embed_manifest.json", manifest)
    result.out_dir = out
    return out
