"""A weights path holding something else is reported as what it is, never with advice to turn
the unpickler's safety off (``weights_only=False``)."""

from __future__ import annotations

import io

import pytest
import torch

from virtime.errors import CheckpointError
from virtime.models import load

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(17)
LFS = (b"version https://git-lfs.github.com/spec/v1\n"
       b"oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n"
       b"size 1340000000\n")
HTML = b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body>...</body></html>\n"


@pytest.mark.parametrize(("content", "described"), [
    (LFS, "a git-lfs pointer: the real file was not downloaded"),
    (HTML, "an HTML page"),
    (PNG, "a PNG image"),
    (b"model weights: ask the authors\n", "a text file (31 bytes)"),
    (b'{"architecture": "gigatime"}\n', "a JSON file"),
    (b"", "an empty file"),
    (b"\x1f\x8b\x08\x00" + bytes(20), "a gzip archive"),
], ids=["git-lfs", "html", "png", "text", "json", "empty", "gzip"])
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_a_file_that_is_not_a_checkpoint_says_what_it_is(tmp_path, content, described, suffix):
    path = tmp_path / f"model{suffix}"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as info:
        load(path)
    message = str(info.value)
    assert message.startswith(f"{path}: not a checkpoint: {described}"), message
    assert "weights_only" not in message and "\n" not in message


class _Config:  # a pickled object: what weights_only=True refuses
    pass


def test_a_pickle_with_objects_is_refused_without_unsafe_advice(tmp_path):
    path = tmp_path / "full_model.pth"
    torch.save({"config": _Config(), "w": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError) as info:
        load(path)
    message = str(info.value)
    assert message.startswith(f"{path}: refused to load: the file holds Python objects")
    assert "_Config" in message  # what was refused
    assert "weights_only" not in message and "will likely succeed" not in message


def test_a_corrupt_torch_archive_is_one_checkpoint_error(tmp_path):
    buf = io.BytesIO()
    torch.save({"w": torch.zeros(1000)}, buf)
    path = tmp_path / "cut.pth"
    path.write_bytes(buf.getvalue()[:300])  # a download cut short
    with pytest.raises(CheckpointError, match=r"cut\.pth: corrupt or unreadable checkpoint"):
        load(path)
