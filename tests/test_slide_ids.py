"""Slide ids: one rule (file name minus its slide extension), refused when unusable, unique per run."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pandas as pd
import pytest

from virtime import errors
from virtime.slide_ids import (
    check_unique_ids,
    content_sha256,
    same_source,
    slide_id_from_path,
    slide_source,
    validate_slide_id,
)

UUID = "0a1b2c3d-4e5f-6789-abcd-ef0123456789"


@pytest.mark.parametrize(("path", "expected"), [
    # TCGA diagnostic slides: the barcode and the uuid stay together (the old rule kept only the
    # barcode, so two scans of one case collided and did not join with embeddings).
    (f"/data/TCGA-AA-3512-01Z-00-DX1.{UUID}.svs", f"TCGA-AA-3512-01Z-00-DX1.{UUID}"),
    (f"TCGA-AA-3512-01Z-00-DX2.{UUID}.svs", f"TCGA-AA-3512-01Z-00-DX2.{UUID}"),
    ("case.A.svs", "case.A"),
    ("case.B.SVS", "case.B"),
    ("scan.ome.tiff", "scan"),
    ("scan.ome.tif", "scan"),
    ("CMU-1.mrxs", "CMU-1"),
    ("OS-2.ndpi", "OS-2"),
    ("slide.tif", "slide"),
    ("a/b/slide.tiff", "slide"),
    ("Leica-1.scn", "Leica-1"),
    ("image.jpg", "image.jpg"),  # not a slide extension: the name is kept whole
    ("noext", "noext"),
])
def test_slide_id_keeps_everything_but_the_slide_extension(path, expected):
    assert slide_id_from_path(path) == expected


@pytest.mark.parametrize("path", [".hidden.svs", ".svs", "..svs", "dir/.x.tif"])
def test_unusable_ids_are_refused_naming_the_file(path):
    with pytest.raises(errors.SlideIdError, match=r"slide id") as info:
        slide_id_from_path(path)
    assert path in str(info.value)


@pytest.mark.parametrize("sid", ["", ".", "..", "../up", "a/b", "a\\b", "x\x00y"])
def test_explicit_ids_are_validated(sid):
    with pytest.raises(errors.SlideIdError):
        validate_slide_id(sid)


def test_collisions_name_both_files(tmp_path):
    with pytest.raises(errors.SlideIdError) as info:
        check_unique_ids(["d1/slide.svs", "d2/slide.svs"])
    assert "d1/slide.svs" in str(info.value) and "d2/slide.svs" in str(info.value)
    # Case-insensitive, as the output folders are on macOS and Windows.
    with pytest.raises(errors.SlideIdError, match="A.svs and a.svs"):
        check_unique_ids(["A.svs", "a.svs"])
    with pytest.raises(errors.SlideIdError, match="given twice"):
        check_unique_ids([tmp_path / "x.svs", tmp_path / "x.svs"])
    assert check_unique_ids(["case.A.svs", "case.B.svs"]) == ["case.A", "case.B"]


def test_slide_source_is_size_time_and_sampled_hashes(tmp_path):
    a = tmp_path / "a.svs"
    a.write_bytes(b"x" * 3_000_000)
    src = slide_source(a)
    assert set(src) == {"path", "size", "mtime_ns", "head_sha256", "sampled_sha256"}
    assert (src["path"], src["size"], src["mtime_ns"]) == (str(a.resolve()), 3_000_000,
                                                            a.stat().st_mtime_ns)
    assert src["head_sha256"] == hashlib.sha256(b"x" * (1 << 20)).hexdigest()
    copy = tmp_path / "copy" / "a.svs"
    copy.parent.mkdir()
    copy.write_bytes(a.read_bytes())
    assert same_source(src, slide_source(copy))  # a moved or copied slide is the same slide
    other = tmp_path / "b.svs"
    other.write_bytes(b"y" + b"x" * 2_999_999)
    assert not same_source(src, slide_source(other))
    assert not same_source(None, src)


def _rewrite(path, offset: int, data: bytes) -> None:
    """Overwrite bytes in place (same size), with a modification time other than before."""
    before = path.stat().st_mtime_ns
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(data)
    os.utime(path, ns=(before + 5_000_000_000, before + 5_000_000_000))


def test_a_changed_file_with_the_same_size_and_header_is_not_the_same(tmp_path):
    """Old identity (size + first MiB) took any of these changes for the same slide."""
    size = 40_000_000
    a = tmp_path / "a.svs"
    a.write_bytes(b"")
    os.truncate(a, size)  # zeros (sparse: cheap)
    recorded = {**slide_source(a), "content_sha256": content_sha256(a)}
    assert recorded["content_sha256"] == hashlib.sha256(bytes(size)).hexdigest()
    assert same_source(recorded, slide_source(a), a)
    _rewrite(a, size - 10, b"\x01")  # in the last MiB: the samples see it
    assert slide_source(a)["head_sha256"] == recorded["head_sha256"]
    assert slide_source(a)["sampled_sha256"] != recorded["sampled_sha256"]
    assert not same_source(recorded, slide_source(a), a)
    _rewrite(a, size - 10, b"\x00")  # back to the recorded content (a new time)
    assert same_source(recorded, slide_source(a), a)
    # Between two samples (just after the first MiB; 62 samples are ~0.6 MB apart in 40 MB):
    # only the whole file's hash sees it, read because the time changed.
    gap = (1 << 20) + 1000
    probe = {**slide_source(a), "content_sha256": recorded["content_sha256"]}
    _rewrite(a, gap, b"\x01")
    assert slide_source(a)["sampled_sha256"] == probe["sampled_sha256"]  # not sampled
    assert not same_source(probe, slide_source(a), a)
    # Untouched since it was recorded: decided by the samples, the whole file not read again.
    fresh = {**slide_source(a), "content_sha256": content_sha256(a)}
    import virtime.slide_ids as ids

    def no_full_read(path):
        raise AssertionError("the whole file was hashed for an untouched slide")

    original, ids.content_sha256 = ids.content_sha256, no_full_read
    try:
        assert same_source(fresh, slide_source(a), a)
    finally:
        ids.content_sha256 = original


def test_a_record_of_an_older_virtime_is_compared_as_it_was_made(tmp_path):
    a = tmp_path / "a.svs"
    a.write_bytes(b"x" * 2_000_000)
    old = {"path": str(a), "size": 2_000_000,
           "head_sha256": hashlib.sha256(b"x" * (1 << 20)).hexdigest()}
    assert same_source(old, slide_source(a), a)
    assert not same_source({**old, "size": 1}, slide_source(a), a)


def test_cohort_manifest_uses_the_same_rule(tmp_path):
    from virtime.cohort.manifest import validate_manifest

    frame = pd.DataFrame({"path": [f"TCGA-AA-3512-01Z-00-DX1.{UUID}.svs", "case.A.svs",
                                   "case.B.svs"], "patient_id": ["p1", "p2", "p2"]})
    table = validate_manifest(frame, base_dir=tmp_path)
    assert list(table["slide_id"]) == [f"TCGA-AA-3512-01Z-00-DX1.{UUID}", "case.A", "case.B"]
    clash = pd.DataFrame({"path": ["d1/slide.svs", "d2/slide.svs"], "patient_id": ["1", "2"]})
    with pytest.raises(errors.InputDataError, match="repeated") as info:
        validate_manifest(clash)
    assert "d1/slide.svs" in str(info.value) and "d2/slide.svs" in str(info.value)
    with pytest.raises(errors.InputDataError, match="plain folder name"):
        validate_manifest(pd.DataFrame({"path": [".hidden.svs"], "patient_id": ["1"]}))


def test_background_content_hash_equals_hashlib_and_cancels(tmp_path) -> None:
    """The thread's digest is the whole file's SHA-256; a cancelled hash stops reading and
    says so; a read error reaches the caller."""
    import threading

    from virtime.slide_ids import BackgroundContentHash, content_sha256

    data = np.random.default_rng(0).integers(0, 256, (20 << 20) + 123, dtype=np.uint8).tobytes()
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    bg = BackgroundContentHash(path)
    assert bg.result() == hashlib.sha256(data).hexdigest()
    assert bg.seconds > 0
    stop = threading.Event()
    stop.set()
    assert content_sha256(path, stop) is None  # stops before the first block is hashed
    cancelled = BackgroundContentHash(path)
    cancelled.cancel()
    try:
        digest = cancelled.result()
    except RuntimeError as exc:
        assert "cancelled" in str(exc)
    else:  # the thread may finish before cancel() lands; then the digest is the right one
        assert digest == hashlib.sha256(data).hexdigest()
    missing = BackgroundContentHash(tmp_path / "gone.bin")
    with pytest.raises(FileNotFoundError):
        missing.result()
