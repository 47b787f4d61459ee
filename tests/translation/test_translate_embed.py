"""``translate --embed``: one pass over the tiles gives the same embeddings as ``virtime embed``."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
from tiny_models import tiny_encoders

import virtime
from virtime import errors
from virtime.cli import main
from virtime.embed import EmbedConfig, embed_slide
from virtime.embed.joint import TileEmbedder


@pytest.fixture(scope="module")
def encoders():
    return tiny_encoders(1)


@pytest.mark.slow
def test_joint_pass_equals_separate_embedding(small_slide, tiny_model, fast_config, encoders,
                                              tmp_path):
    tile, slide = encoders
    # The tiny translator reads at 0.5 um/px, so 256-px tiles are exactly the encoder's tiles.
    cfg = dataclasses.replace(fast_config, tile_size=256, features=False)
    embed_cfg = EmbedConfig(backend="torch", show_progress=False)
    result = virtime.translate(small_slide, tiny_model, tmp_path, cfg,
                               embedder=TileEmbedder(tile, embed_cfg, slide))
    joint = pd.read_parquet(result.output_dir / "embeddings" / "tile_embeddings.parquet")
    alone = embed_slide(small_slide, tile, tmp_path / "alone", embed_cfg, slide_encoder=slide)
    assert len(joint) == len(alone.tiles) > 0
    np.testing.assert_array_equal(joint[["x", "y", "coord_x", "coord_y"]].to_numpy(),
                                  alone.tiles[["x", "y", "coord_x", "coord_y"]].to_numpy())
    np.testing.assert_allclose(np.stack(joint["embedding"].to_numpy()), alone.tile_embeddings,
                               atol=1e-5)
    slide_joint = pd.read_parquet(result.output_dir / "embeddings" / "slide_embedding.parquet")
    np.testing.assert_allclose(slide_joint["embedding"][0], alone.slide_embedding, atol=1e-5)
    assert "embed" in result.record["timings_seconds"]


def test_joint_pass_refuses_tiles_of_another_size(small_slide, tiny_model, fast_config, encoders,
                                                  tmp_path):
    tile, _ = encoders
    with pytest.raises(errors.InvalidArgumentError, match="--tile-size 256"):
        virtime.translate(small_slide, tiny_model, tmp_path, fast_config,
                          embedder=TileEmbedder(tile, EmbedConfig(backend="torch", show_progress=False)))


@pytest.mark.slow
def test_cli_translate_embed(small_slide, tiny_weights, encoders, tmp_path):
    tile, _ = encoders
    weights = tmp_path / "tile.pth"
    torch.save(tile.state_dict(), weights)
    assert main(["translate", str(small_slide), "-o", str(tmp_path / "out"), "--weights",
                 str(tiny_weights), "--tile-size", "256", "--backend", "torch", "-q",
                 "--no-features", "--embed", str(weights)]) == 0
    table = pd.read_parquet(tmp_path / "out" / "small" / "embeddings" / "tile_embeddings.parquet")
    assert len(table) > 0 and len(table["embedding"][0]) == 64
