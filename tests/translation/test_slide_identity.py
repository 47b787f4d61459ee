"""A finished folder is "already done" only for the same slide content, and a rerun can retry
the failed tiles of a finished slide (``--retry-failed``) without ``--force``."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil

import numpy as np
import pytest
import tifffile
from slide_outputs import assert_same_outputs

import virtime
from virtime.cli import main

pytestmark = pytest.mark.slow

TIFF_TILE = 256


def _plain_slide(path, rng):
    """A single-level, uncompressed tiled TIFF (1.6 MB): its last tiles lie after the first MiB
    at fixed offsets, so their pixels can be changed in place without changing size or header."""
    from virtime.simulate.slides import synthetic_he

    rgb, _ = synthetic_he(1024, 512, 0.5, rng=rng)
    tifffile.imwrite(path, rgb, tile=(TIFF_TILE, TIFF_TILE), photometric="rgb", metadata=None,
                     resolution=(2e4, 2e4), resolutionunit="CENTIMETER")
    return path


def test_a_slide_changed_in_place_is_translated_again(tiny_model, fast_config, tmp_path, rng,
                                                       caplog):
    """Old code: same size and same first MiB, so the changed slide was "already done" and its
    old outputs kept."""
    slide = _plain_slide(tmp_path / "s.tif", rng)
    first = virtime.translate(slide, tiny_model, tmp_path / "out", fast_config)
    original = hashlib.sha256(slide.read_bytes()).hexdigest()
    # Touched (or copied back) with the same content: still done.
    later = slide.stat().st_mtime_ns + 10_000_000_000
    os.utime(slide, ns=(later, later))
    again = virtime.translate(slide, tiny_model, tmp_path / "out", fast_config)
    assert again.skipped
    # Change the pixels of the last tile in place: same size, same header, same first MiB.
    head = slide.read_bytes()[: 1 << 20]
    size = slide.stat().st_size
    with tifffile.TiffFile(slide) as tif:
        page = tif.pages[0]
        offset, count = page.dataoffsets[-1], page.databytecounts[-1]
    assert offset > 1 << 20
    with open(slide, "r+b") as fh:
        fh.seek(offset)
        old = fh.read(count)
        fh.seek(offset)
        fh.write(bytes(255 - b for b in old))
    assert slide.stat().st_size == size and slide.read_bytes()[: 1 << 20] == head
    with caplog.at_level(logging.WARNING):
        redone = virtime.translate(slide, tiny_model, tmp_path / "out", fast_config)
    assert not redone.skipped
    assert any("changed since it was translated" in r.getMessage() for r in caplog.records)
    # The record: the whole file's hash (what a touched file is checked against), and the time
    # of a file verified unchanged (so the next check needs no full read).
    assert first.record["source"]["content_sha256"] == original
    assert again.record["source"]["mtime_ns"] == later
    assert redone.record["source"]["content_sha256"] == hashlib.sha256(
        slide.read_bytes()).hexdigest() != original
    # the outputs are the changed slide's: the same as a fresh translation of it
    fresh = tmp_path / "fresh" / "s.tif"
    fresh.parent.mkdir()
    shutil.copy(slide, fresh)
    virtime.translate(fresh, tiny_model, tmp_path / "fresh_out", fast_config)
    assert_same_outputs(redone.output_dir, tmp_path / "fresh_out" / "s")


def _slide_with_bad_tile(folder, rng):
    """A synthetic slide (with a low-resolution level, so tissue detection never reads level 0)
    whose level-0 TIFF tile holding the most tissue is overwritten with garbage."""
    from virtime.simulate.slides import synthetic_he, write_slide

    rgb, tissue = synthetic_he(768, 512, 0.5, rng=rng)
    path = write_slide(folder / "bad.svs", rgb, 0.5, tile=TIFF_TILE, min_level_size=96)
    share = [(tissue[r * 256:(r + 1) * 256, c * 256:(c + 1) * 256].mean(), c, r)
             for r in range(2) for c in range(3)]
    _, col, row = max(share)
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        k = row * -(-page.imagewidth // TIFF_TILE) + col
        offset, count = page.dataoffsets[k], page.databytecounts[k]
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(b"\xff" * count)
    return path


def test_retry_failed_translates_again_only_slides_with_failed_tiles(tiny_weights, tmp_path, rng,
                                                                      capsys):
    """Old code had no way but --force (which redoes every slide) to retry failed tiles."""
    from virtime.simulate.slides import make_slide

    bad = _slide_with_bad_tile(tmp_path, rng)
    clean = make_slide(tmp_path / "clean.svs", 512, 384, mpp=0.5, seed=4)
    out = tmp_path / "out"
    flags = ["-o", str(out), "--weights", str(tiny_weights), "-q", "--backend", "onnxruntime",
             "--tile-size", "128", "--threads", "2", "--no-features"]
    assert main(["translate", str(bad), str(clean), *flags]) == 0
    summary = json.loads((out / "bad" / "summary.json").read_text())
    failed = summary["tiles_failed"]
    assert failed >= 1 and summary["failed_tiles"]
    reference = tmp_path / "reference"  # the first run's outputs, kept aside
    shutil.copytree(out / "bad", reference)
    capsys.readouterr()
    assert main(["translate", str(bad), str(clean), *flags]) == 0  # plain rerun: both skipped
    assert capsys.readouterr().out.count("already done") == 2
    clean_done = (out / "clean" / "summary.json").stat().st_mtime_ns
    assert main(["translate", str(bad), str(clean), *flags, "--retry-failed"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("bad: ") and f"({failed} failed)" in line for line in lines)
    assert any(line.startswith("clean: already done") for line in lines)  # no failures: skipped
    assert (out / "clean" / "summary.json").stat().st_mtime_ns == clean_done
    # Nothing lost: the tile that still cannot be read fails again, every other tile is the same.
    retried = json.loads((out / "bad" / "summary.json").read_text())
    assert retried["failed_tiles"] == summary["failed_tiles"]
    assert_same_outputs(out / "bad", reference)
    np.testing.assert_array_equal(np.load(out / "bad" / "failed_mask.npy"),
                                  np.load(reference / "failed_mask.npy"))


def test_retry_failed_is_a_translate_config_field(tiny_model, fast_config, small_slide, tmp_path):
    """In Python: ``TranslateConfig(retry_failed=True)``; a slide without failures is skipped."""
    virtime.translate(small_slide, tiny_model, tmp_path / "out", fast_config)
    retry = dataclasses.replace(fast_config, retry_failed=True)
    assert retry.as_dict()["retry_failed"] is True
    assert virtime.translate(small_slide, tiny_model, tmp_path / "out", retry).skipped
