"""Nothing silently wrong (issue 15): resume fingerprints, slide identity, locks, mpp limits and
OS errors of ``translate``. Each test fails on the code before the fix (noted per test)."""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from dying_engine import DyingEngine, Interrupt
from slide_outputs import assert_same_outputs as _assert_same_outputs  # mIF + tiles.parquet

import virtime
from virtime import errors
from virtime.cli import main
from virtime.translation.lock import LOCK_NAME, SlideLock


class _StopAfterFirstBand(DyingEngine):
    """Dies at the first engine call after the canvas recorded a finished band."""

    def __init__(self, engine, manifest):
        super().__init__(engine, calls=0)
        self.manifest = manifest

    def run(self, batch):
        if self.manifest.is_file() and json.loads(self.manifest.read_text())["stages"].get(
                "level0_bands"):
            raise Interrupt
        return self.engine.run(batch)


@pytest.fixture
def fast_config(fast_config):
    """The shared fast configuration without slide features (not what these tests check)."""
    return dataclasses.replace(fast_config, features=False)


@pytest.fixture(scope="module")
def other_weights(tmp_path_factory):
    """A second tiny GigaTIME (other seed, other biases): the "other --weights" of a rerun."""
    from tiny_models import save_tiny_gigatime

    return save_tiny_gigatime(tmp_path_factory.mktemp("model_b") / "other.safetensors", seed=1,
                              bias=(2, -2))


@pytest.fixture(scope="module")
def other_model(other_weights):
    from virtime.models import load

    return load(other_weights)


@pytest.fixture(scope="module")
def tall(tmp_path_factory):
    """Three canvas bands (2,304 rows), so a run can stop with finished bands behind it."""
    from virtime.simulate.slides import make_slide

    return make_slide(tmp_path_factory.mktemp("safety") / "tall.svs", 384, 2304, mpp=0.5, seed=12)


@pytest.fixture(scope="module")
def tall_reference_b(tall, other_model, tmp_path_factory):
    """A fresh, uninterrupted run of the tall slide with the other model."""
    from virtime.translation import TranslateConfig

    cfg = TranslateConfig(tile_size=128, output_mpp=2.0, backend="onnxruntime",
                          show_progress=False, batch_size=4, window_batch=16, threads=2,
                          features=False)
    return virtime.translate(tall, other_model, tmp_path_factory.mktemp("ref_b"), cfg).output_dir


# ----------------------------------------------------------------- defect 1: resume mixes runs
@pytest.mark.slow
def test_resume_with_other_weights_starts_fresh(tall, tiny_model, other_model, fast_config,
                                                tall_reference_b, tmp_path, caplog):
    """Old code kept the first model's finished bands: the canvas differed from a fresh run."""
    from virtime.engines import create_engine

    engine = create_engine(tiny_model, backend=fast_config.backend, max_batch=16, window=64)
    mpath = tmp_path / "tall" / "mif.ome.zarr.manifest.json"
    with pytest.raises(Interrupt):
        virtime.translate(tall, tiny_model, tmp_path, fast_config,
                          engine=_StopAfterFirstBand(engine, mpath))
    manifest = json.loads(mpath.read_text())
    assert manifest["stages"]["level0_bands"] and not manifest["finished"]  # model A's bands
    with caplog.at_level(logging.WARNING):
        resumed = virtime.translate(tall, other_model, tmp_path, fast_config)
    assert not resumed.skipped
    warned = [r.getMessage() for r in caplog.records if "starting fresh" in r.getMessage()]
    assert len(warned) == 1 and "model_hash" in warned[0] and "overlap" not in warned[0]
    _assert_same_outputs(tall_reference_b, resumed.output_dir)
    assert resumed.record["model_hash"] == other_model.card.sha256
    assert resumed.record["fingerprint"]["model_hash"] == other_model.card.sha256


@pytest.mark.slow
def test_finished_folder_with_other_settings_is_redone(small_slide, tiny_model, other_model,
                                                       fast_config, tmp_path, caplog):
    """Old code reported the first run "already done" whatever the new weights or overlap."""
    first = virtime.translate(small_slide, tiny_model, tmp_path / "o", fast_config)
    with caplog.at_level(logging.WARNING):
        redone = virtime.translate(small_slide, other_model, tmp_path / "o", fast_config)
    assert not redone.skipped
    assert any("redoing" in r.getMessage() and "model_hash" in r.getMessage()
               for r in caplog.records)
    fresh = virtime.translate(small_slide, other_model, tmp_path / "fresh", fast_config)
    _assert_same_outputs(fresh.output_dir, redone.output_dir)
    # Same settings again: now it is done.
    assert virtime.translate(small_slide, other_model, tmp_path / "o", fast_config).skipped
    assert first.record["fingerprint"]["model_hash"] == tiny_model.card.sha256


def test_fingerprint_covers_the_fitted_stain_reference(tiny_model):
    """Two Macenko references must not count as the same normalization."""
    from virtime.stain import get_normalizer
    from virtime.translation import TranslateConfig
    from virtime.translation.fingerprint import fingerprint_diff, translation_fingerprint

    cfg = TranslateConfig(normalize="macenko")
    default = get_normalizer("macenko")
    lab = get_normalizer("macenko").set_reference(
        np.array([[0.65, 0.07], [0.70, 0.99], [0.29, 0.11]]), np.array([1.5, 1.2]))
    kw = {"model_hash": "m", "engine": None, "config": cfg, "window": 64, "model_mpp": 0.5,
          "slide_mpp": 0.5}
    a = translation_fingerprint(normalizer=default, **kw)
    b = translation_fingerprint(normalizer=lab, **kw)
    c = translation_fingerprint(normalizer=None, **kw)
    assert fingerprint_diff(a, b) == ["normalize_reference"]
    assert fingerprint_diff(a, c) == ["normalize", "normalize_reference"]
    assert fingerprint_diff(a, translation_fingerprint(normalizer=get_normalizer("macenko"),
                                                       **kw)) == []


# ----------------------------------------------------------------- defect 2: slide identity
def test_cli_refuses_colliding_ids_before_any_work(small_slide, tiny_weights, tmp_path, capsys):
    """Old code translated d1/slide.svs and reported d2/slide.svs as already done."""
    for d in ("d1", "d2"):
        (tmp_path / d).mkdir()
        shutil.copy(small_slide, tmp_path / d / "slide.svs")
    out = tmp_path / "out"
    rc = main(["translate", str(tmp_path / "d1" / "slide.svs"), str(tmp_path / "d2" / "slide.svs"),
               "-o", str(out), "--weights", str(tiny_weights), "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert str(tmp_path / "d1" / "slide.svs") in err[0] and str(tmp_path / "d2" / "slide.svs") in err[0]
    assert not out.exists()  # refused before any work


def test_hidden_name_gets_no_empty_id(small_slide, tiny_model, fast_config, tmp_path):
    """Old code gave '.hidden.svs' the id '' and wrote into the output root itself."""
    hidden = tmp_path / ".hidden.svs"
    shutil.copy(small_slide, hidden)
    with pytest.raises(errors.SlideIdError, match=r"\.hidden"):
        virtime.translate(hidden, tiny_model, tmp_path / "out", fast_config)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_other_slide_with_the_same_id_is_never_already_done(small_slide, tiny_model, fast_config,
                                                            tmp_path):
    """Old code skipped the second slide: same folder name, "already done"."""
    from virtime.simulate.slides import make_slide

    (tmp_path / "d1").mkdir()
    first_path = tmp_path / "d1" / "s.svs"
    shutil.copy(small_slide, first_path)
    (tmp_path / "d2").mkdir()
    second_path = make_slide(tmp_path / "d2" / "s.svs", 640, 512, mpp=0.5, seed=99)
    first = virtime.translate(first_path, tiny_model, tmp_path / "out", fast_config)
    head = hashlib.sha256(first_path.read_bytes()[: 1 << 20]).hexdigest()
    whole = hashlib.sha256(first_path.read_bytes()).hexdigest()
    assert {k: first.record["source"][k] for k in ("path", "size", "head_sha256",
                                                   "content_sha256")} == {
        "path": str(first_path.resolve()), "size": first_path.stat().st_size,
        "head_sha256": head, "content_sha256": whole}
    with pytest.raises(errors.SlideIdError) as info:
        virtime.translate(second_path, tiny_model, tmp_path / "out", fast_config)
    assert str(first_path.resolve()) in str(info.value) and str(second_path) in str(info.value)
    forced = virtime.translate(second_path, tiny_model, tmp_path / "out",
                               dataclasses.replace(fast_config, force=True))
    assert not forced.skipped
    assert forced.record["source"]["path"] == str(second_path.resolve())
    assert virtime.translation.is_translated(forced.output_dir, second_path)
    assert not virtime.translation.is_translated(forced.output_dir, first_path)


# ----------------------------------------------------------------- defect 8: locking
def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_held_lock_stops_the_second_run(small_slide, tiny_model, fast_config, tmp_path):
    """Old code had no lock: two runs wrote the same folder."""
    folder = tmp_path / "small"
    folder.mkdir()
    owner = {"host": socket.gethostname(), "pid": os.getppid(), "started": time.time()}
    (folder / LOCK_NAME).write_text(json.dumps(owner))
    with pytest.raises(errors.OutputLockedError) as info:
        virtime.translate(small_slide, tiny_model, tmp_path, fast_config)
    assert f"pid {os.getppid()} on {socket.gethostname()}" in str(info.value)
    assert sorted(p.name for p in folder.iterdir()) == [LOCK_NAME]  # nothing written


def test_a_stale_lock_is_taken_over_and_released(tmp_path, caplog):
    dead = _dead_pid()
    (tmp_path / LOCK_NAME).write_text(json.dumps({"host": socket.gethostname(), "pid": dead,
                                                  "started": time.time() - 60}))
    with caplog.at_level(logging.WARNING):
        lock = SlideLock(tmp_path, "a.svs").acquire()
    assert any("stale lock" in r.getMessage() and f"pid {dead}" in r.getMessage()
               for r in caplog.records)
    assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    lock.release()
    assert not (tmp_path / LOCK_NAME).exists()
    # A lock from another host cannot be checked: it is reported, not taken over.
    (tmp_path / LOCK_NAME).write_text(json.dumps({"host": "elsewhere", "pid": dead}))
    with pytest.raises(errors.OutputLockedError, match=f"pid {dead} on elsewhere"):
        SlideLock(tmp_path, "a.svs").acquire()


def test_lock_is_released_when_the_run_fails(small_slide, tiny_model, fast_config, tmp_path):
    from virtime.engines import create_engine

    engine = create_engine(tiny_model, backend=fast_config.backend, max_batch=16, window=64)
    with pytest.raises(Interrupt):
        virtime.translate(small_slide, tiny_model, tmp_path, fast_config,
                          engine=DyingEngine(engine, calls=1))
    assert not (tmp_path / "small" / LOCK_NAME).exists()


def test_lock_waits_for_its_owner(tmp_path):
    held = SlideLock(tmp_path, "a.svs").acquire()
    with pytest.raises(errors.OutputLockedError, match=f"pid {os.getpid()}"):
        SlideLock(tmp_path, "a.svs").acquire(timeout=0.2)
    threading.Timer(0.3, held.release).start()
    t0 = time.monotonic()
    second = SlideLock(tmp_path, "a.svs").acquire(timeout=10)
    assert second.held and 0.2 < time.monotonic() - t0 < 5
    second.release()
    assert not (tmp_path / LOCK_NAME).exists()


def test_temporary_names_are_unique(tmp_path, monkeypatch):
    """Old code wrote every tile table through the fixed name '.tiles.parquet.tmp'."""
    import pyarrow.parquet as pq

    from virtime.io import NO_MODEL, write_parquet

    seen = []
    real = pq.write_table

    def spy(table, where, *a, **k):
        seen.append(Path(where).name)
        return real(table, where, *a, **k)

    monkeypatch.setattr(pq, "write_table", spy)
    for _ in range(2):
        write_parquet(pd.DataFrame({"a": [1]}), tmp_path / "tiles.parquet", model_hash=NO_MODEL)
    assert len(set(seen)) == 2 and all(str(os.getpid()) in name for name in seen)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiles.parquet"]


# ----------------------------------------------------------------- defect 9: absurd resolution
@pytest.fixture(scope="module")
def coarse_slide(tmp_path_factory):
    from virtime.simulate.slides import make_slide

    return make_slide(tmp_path_factory.mktemp("coarse") / "coarse.svs", 256, 256, mpp=40.0,
                      seed=3)


def test_absurd_metadata_mpp_is_refused(coarse_slide, tiny_weights, tmp_path, capsys):
    """Old code accepted 40 um/px (up to 50) and tiled it 80x upsampled."""
    rc = main(["translate", str(coarse_slide), "-o", str(tmp_path / "out"), "--weights",
               str(tiny_weights), "-q", "--backend", "onnxruntime"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert "mpp 40 um/px from the slide metadata" in err[0] and "0.1-2" in err[0]
    assert not (tmp_path / "out" / "coarse").exists()


def test_explicit_mpp_still_refuses_extreme_upsampling(coarse_slide, tiny_model, fast_config,
                                                       tmp_path):
    from virtime.slide import Slide
    from virtime.translation.request import check_slide_mpp

    cfg = dataclasses.replace(fast_config, mpp=40.0)
    with pytest.raises(errors.InvalidMppError, match=r"given with --mpp is 80x coarser"):
        virtime.translate(coarse_slide, tiny_model, tmp_path, cfg)
    # An explicit, plausible mpp passes the range check; --allow-mpp lifts both limits.
    assert check_slide_mpp(Slide(coarse_slide, mpp=1.5), dataclasses.replace(cfg, mpp=1.5),
                           0.5) == 1.5
    assert check_slide_mpp(Slide(coarse_slide), dataclasses.replace(fast_config, allow_mpp=True),
                           0.5) == 40.0
    with pytest.raises(errors.InvalidMppError, match="2.5x coarser"):
        check_slide_mpp(Slide(coarse_slide, mpp=1.25), dataclasses.replace(cfg, mpp=1.25,
                                                                           max_upsample=2), 0.5)


# ----------------------------------------------------------------- defect 11: OS errors
def test_output_root_that_is_a_file(small_slide, tiny_weights, tmp_path, capsys):
    """Old code: a NotADirectoryError traceback."""
    target = tmp_path / "not_a_dir"
    target.write_text("keep me")
    rc = main(["translate", str(small_slide), "-o", str(target), "--weights", str(tiny_weights),
               "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == [(f"virtime translate: error: {target}: exists and is not a folder "
                                "(the output root must be a folder)")]
    assert target.read_text() == "keep me"


def test_read_only_output_is_one_line(small_slide, tiny_weights, tmp_path, capsys, monkeypatch):
    """Old code: a PermissionError traceback. (Simulated: the tests may run as root.)"""
    ro = tmp_path / "ro"
    ro.mkdir()
    real_mkdir = Path.mkdir

    def mkdir(self, *a, **k):
        if ro in self.parents:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_mkdir(self, *a, **k)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    rc = main(["translate", str(small_slide), "-o", str(ro), "--weights", str(tiny_weights),
               "-q", "--backend", "onnxruntime", "--tile-size", "128"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == [f"virtime translate: error: {ro / 'small'}: Permission denied"]
    assert list(ro.iterdir()) == []


@pytest.mark.slow
def test_full_disk_is_one_line_and_resumes_byte_identical(tall, other_weights, tall_reference_b,
                                                          tmp_path, capsys, monkeypatch):
    """Old code: an OSError traceback from the band writer."""
    from virtime.stitch.canvas import StreamingCanvas

    real = StreamingCanvas._write_band
    calls = {"n": 0}

    def full_disk(self, band, y0, out):
        calls["n"] += 1
        if calls["n"] >= 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(self.path / "0" / "c"))
        return real(self, band, y0, out)

    args = ["translate", str(tall), "-o", str(tmp_path), "--weights", str(other_weights), "-q",
            "--backend", "onnxruntime", "--tile-size", "128", "--batch-size", "4",
            "--window-batch", "16", "--threads", "2", "--no-features"]
    monkeypatch.setattr(StreamingCanvas, "_write_band", full_disk)
    rc = main(args)
    err = capsys.readouterr().err.strip().splitlines()
    zpath = tmp_path / "tall" / "mif.ome.zarr"
    assert rc == 2 and err == [f"virtime translate: error: {zpath / '0' / 'c'}: No space left on device"]
    left = [p.name for p in (tmp_path / "tall").rglob("*")
            if p.name.endswith((".partial", ".tmp", ".tmp.npy")) or p.name == LOCK_NAME]
    assert left == [] and not (tmp_path / "tall" / "summary.json").exists()
    monkeypatch.setattr(StreamingCanvas, "_write_band", real)
    assert main(args) == 0
    _assert_same_outputs(tall_reference_b, tmp_path / "tall")


def test_unwritable_output_root_is_refused_before_work(tmp_path, monkeypatch):
    from virtime.translation.request import check_output_root

    ro = tmp_path / "ro"
    ro.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == ro else real(p, mode))
    with pytest.raises(errors.OutputError, match=r"ro: Permission denied"):
        check_output_root(ro / "out")  # not there yet: its nearest existing folder is checked
    check_output_root(tmp_path / "fine")
