"""TranslateConfig / EmbedConfig are made of the engine, tiling and features configs, and still
take and give the flat names (keywords, attributes, ``dataclasses.replace``, ``as_dict``)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from virtime.embed import EmbedConfig
from virtime.errors import InvalidArgumentError
from virtime.translation.config import EngineConfig, FeaturesConfig, TilingConfig, TranslateConfig

OLD_KEYS = ["backend", "precision", "device", "batch_size", "window_batch", "threads",
            "tile_size", "overlap", "min_tissue", "output_mpp", "normalize", "mpp", "model_mpp",
            "ome_tiff", "thumbnail_channels", "features", "force", "lock_timeout", "mpp_range",
            "max_upsample", "allow_mpp", "show_progress", "log_json", "cache_dir",
            "engine_options", "cells", "memory_budget", "device_path"]


def test_flat_keywords_fill_the_parts() -> None:
    c = TranslateConfig(tile_size=256, overlap=16, backend="torch", window_batch=4, bin_um=32.0,
                        output_mpp=1.0)
    assert c.tiling == TilingConfig(tile_size=256, overlap=16)
    assert c.engine == EngineConfig(backend="torch", window_batch=4)
    assert c.slide_features == FeaturesConfig(bin_um=32.0)
    assert (c.tile_size, c.overlap, c.backend, c.window_batch, c.bin_um, c.output_mpp) == (
        256, 16, "torch", 4, 32.0, 1.0)
    nested = TranslateConfig(engine=EngineConfig(backend="torch", window_batch=4),
                             tiling=TilingConfig(tile_size=256, overlap=16),
                             slide_features=FeaturesConfig(bin_um=32.0), output_mpp=1.0)
    assert nested == c


def test_flat_attributes_are_read_only() -> None:
    with pytest.raises(AttributeError):
        TranslateConfig().tile_size = 3  # type: ignore[misc]


def test_replace_with_flat_and_nested_names() -> None:
    c = TranslateConfig(tile_size=256, backend="torch")
    r = dataclasses.replace(c, overlap=16, show_progress=False)
    assert (r.tile_size, r.overlap, r.backend, r.show_progress) == (256, 16, "torch", False)
    assert c.overlap == 0  # frozen: the original is unchanged
    assert dataclasses.replace(c, engine=EngineConfig()).backend == "auto"


def test_as_dict_keeps_the_flat_record() -> None:
    c = TranslateConfig(tile_size=256, overlap=8, backend="torch", engine_options={"a": 1})
    d = c.as_dict()
    assert list(d)[: len(OLD_KEYS)] == OLD_KEYS
    assert d["tile_size"] == 256 and d["overlap"] == 8 and d["backend"] == "torch"
    assert d["thumbnail_channels"] == ["DAPI", "CD8", "CK"] and d["mpp_range"] == [0.1, 2.0]
    assert (d["bin_um"], d["threshold"], d["max_failed_share"]) == (64.0, 0.5, 0.05)
    json.dumps(d)  # summary.json can hold it


def test_unknown_and_invalid_settings() -> None:
    with pytest.raises(TypeError, match="tile_sise"):
        TranslateConfig(tile_sise=256)
    with pytest.raises(InvalidArgumentError):
        TranslateConfig(tile_size=128, overlap=128)
    with pytest.raises(InvalidArgumentError):
        TranslateConfig(threshold=2.0)


@pytest.mark.parametrize("cls", [TranslateConfig, EmbedConfig])
def test_signature_lists_every_keyword_with_the_default_it_builds(cls) -> None:
    """help() and notebook completion read inspect.signature: every flat name of every part and
    every own field is an explicit keyword whose default is what ``cls()`` holds."""
    import inspect

    params = inspect.signature(cls).parameters
    default = cls()
    flat = [n for part in ("engine", "tiling", "slide_features") if hasattr(default, part)
            for n in cls._FLAT.get(part, ())]
    own = [f.name for f in dataclasses.fields(cls)]
    assert sorted(params) == sorted({*flat, *own})
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params.values())
    for name in [*flat, *own]:
        assert params[name].default == getattr(default, name), name
    assert "tile_size: int = " in str(inspect.signature(cls))
    # A config built from the signature's defaults is the default config.
    assert cls(**{n: p.default for n, p in params.items() if n in flat}) == default


@pytest.mark.parametrize("cls", [TranslateConfig, EmbedConfig])
def test_static_signature_is_the_runtime_one(cls) -> None:
    """IDEs read the ``if TYPE_CHECKING:`` __init__ in the source; it must list the keywords of
    the runtime signature in its order, with the same literal defaults (``...`` only where the
    default is built)."""
    import ast
    import inspect
    import sys

    module = sys.modules[cls.__module__]
    tree = ast.parse(inspect.getsource(module))
    body = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls.__name__)
    guard = next(n for n in body.body if isinstance(n, ast.If)
                 and ast.unparse(n.test) == "TYPE_CHECKING")
    init = next(n for n in guard.body if isinstance(n, ast.FunctionDef) and n.name == "__init__")
    runtime = inspect.signature(cls).parameters
    assert [a.arg for a in init.args.kwonlyargs] == list(runtime)
    for arg, default in zip(init.args.kwonlyargs, init.args.kw_defaults):
        expected = runtime[arg.arg].default
        if isinstance(default, ast.Constant) and default.value is Ellipsis:
            assert not isinstance(expected, (str, int, float, bool, tuple, type(None))), arg.arg
        else:
            assert eval(ast.unparse(default), vars(module)) == expected, arg.arg


def test_fingerprint_reads_the_flat_values() -> None:
    from virtime.translation.fingerprint import translation_fingerprint

    c = TranslateConfig(tile_size=256, overlap=16, min_tissue=0.2, output_mpp=1.0)
    fp = translation_fingerprint(model_hash="h", engine=None, config=c, normalizer=None,
                                 window=64, model_mpp=0.5, slide_mpp=0.5)
    assert (fp["tile_size"], fp["overlap"], fp["min_tissue"], fp["output_mpp"]) == (
        256, 16, 0.2, 1.0)


def test_embed_config_reuses_engine_and_tiling() -> None:
    e = EmbedConfig(device="cpu", batch_size=8, min_tissue=0.3)
    assert e.engine == EngineConfig(device="cpu", batch_size=8)
    assert e.tiling == TilingConfig(target_mpp=0.5, tile_size=256, min_tissue=0.3)
    assert (e.device, e.batch_size, e.target_mpp, e.tile_size) == ("cpu", 8, 0.5, 256)
    assert EmbedConfig().batch_size == 32
    assert dataclasses.replace(e, tile_size=512).tiling.tile_size == 512


def test_features_settings_reach_features_parquet(small_slide, tiny_model, fast_config,
                                                  tmp_path) -> None:
    import pyarrow.parquet as pq

    from virtime import translate

    config = dataclasses.replace(fast_config, bin_um=32.0, threshold=0.4)
    result = translate(small_slide, tiny_model, tmp_path, config)
    meta = pq.read_schema(result.output_dir / "features.parquet").metadata
    text = b" ".join(meta.values()).decode()
    assert '"bin_um": 32.0' in text and '"threshold": 0.4' in text
