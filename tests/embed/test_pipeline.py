"""Embedding a synthetic slide end to end, the CPU refusal, and the CLI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from tiny_models import tiny_encoders

from virtime.embed import EmbedConfig, TileEncoder, embed_slide
from virtime.errors import InvalidArgumentError


@pytest.fixture(scope="module")
def slide_path(tmp_path_factory):
    from virtime.simulate.slides import make_slide

    return make_slide(tmp_path_factory.mktemp("embed") / "s.svs", 1024, 768, mpp=0.5, seed=4)


@pytest.fixture(scope="module")
def encoders():
    return tiny_encoders(5, segment_lengths=(8, 64), dilated_ratios=(1, 2))


def test_embed_slide_matches_direct_model_run(slide_path, encoders, tmp_path):
    from virtime.slide import Slide

    tile, slide_enc = encoders
    res = embed_slide(slide_path, tile, tmp_path / "out",
                      EmbedConfig(backend="torch", device="cpu", all_layers=True, show_progress=False,
                                  batch_size=4), slide_enc)
    table = pd.read_parquet(tmp_path / "out" / "tile_embeddings.parquet")
    assert len(table) == len(res.tile_embeddings) > 0
    emb = np.stack(table["embedding"].to_numpy())
    np.testing.assert_array_equal(emb, res.tile_embeddings)
    # independent path: read 3 tiles with the slide reader, crop 224, normalize, run the encoder
    s = Slide(slide_path)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    for i in (0, len(table) // 2, len(table) - 1):
        x, y = int(table.x[i]), int(table.y[i])
        rgb = s.read_region(x, y, 0, 256, 256)[..., :3].astype(np.float64) / 255
        t = ((rgb[16:240, 16:240] - mean) / std).transpose(2, 0, 1)[None].astype(np.float32)
        with torch.no_grad():
            ref = tile(torch.from_numpy(t)).numpy()[0]
        np.testing.assert_allclose(emb[i], ref, atol=2e-3)
    # coordinates at 0.5 um/px are level-0 pixels here (mpp 0.5)
    np.testing.assert_array_equal(table.coord_x, table.x)
    slide_tab = pd.read_parquet(tmp_path / "out" / "slide_embedding.parquet")
    with torch.no_grad():
        direct = slide_enc(torch.from_numpy(emb), torch.from_numpy(
            table[["coord_x", "coord_y"]].to_numpy(np.float32)))[0].numpy()
    np.testing.assert_allclose(np.asarray(slide_tab.embedding[0]), direct, atol=1e-5)
    assert [c for c in slide_tab.columns if c.startswith("layer_")] == ["layer_0", "layer_1",
                                                                       "layer_2"]


def test_billion_parameter_encoder_is_refused_on_cpu(slide_path, monkeypatch):
    with torch.device("meta"):
        big = TileEncoder()  # the real size, never materialised
    with pytest.raises(InvalidArgumentError, match=r"1\.13 B-parameter.*--allow-slow"):
        embed_slide(slide_path, big, None, EmbedConfig(device="cpu", show_progress=False))


def test_cli_embed_and_probe_errors(slide_path, encoders, tmp_path, capsys):
    from virtime.cli import main

    tile, slide_enc = encoders
    torch.save(tile.state_dict(), tmp_path / "tile.bin")
    torch.save({"model": slide_enc.state_dict()}, tmp_path / "slide.pth")
    # small test weights: 4 heads is not what the shapes imply (64 // 64 = 1), so use the API
    # for numerics; the CLI run checks wiring and files
    rc = main(["embed", str(slide_path), "-o", str(tmp_path / "cli"), "--tile-weights",
               str(tmp_path / "tile.bin"), "--slide-weights", str(tmp_path / "slide.pth"),
               "--backend", "torch", "--device", "cpu", "-q"])
    assert rc == 0
    assert (tmp_path / "cli" / "s" / "tile_embeddings.parquet").is_file()
    assert (tmp_path / "cli" / "s" / "slide_embedding.parquet").is_file()
    rc = main(["embed", str(slide_path), "-o", str(tmp_path / "x"), "--tile-weights",
               str(tmp_path / "nope.bin")])
    assert rc == 2
    assert "gated" in capsys.readouterr().err
