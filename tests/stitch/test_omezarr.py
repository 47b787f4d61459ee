"""OME-Zarr metadata against the NGFF 0.4 spec fields, the pyramid values, and OME-TIFF export."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import tifffile

from virtime.channels import CHANNELS
from virtime.errors import InputDataError
from virtime.stitch.canvas import StreamingCanvas
from virtime.stitch.ometiff import export_ome_tiff
from virtime.stitch.omezarr import downsample_2x

SHAPE = (75, 130)  # odd sizes on purpose: the pyramid must average partial edge blocks
CHUNK = 32
MPP = 2.0


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """A canvas filled with known probabilities at factor 1; returns its path and the uint8 truth."""
    rng = np.random.default_rng(7)
    probs = rng.random((len(CHANNELS), *SHAPE), dtype=np.float32)
    path = tmp_path_factory.mktemp("ngff") / "slide.ome.zarr"
    canvas = StreamingCanvas(
        path, SHAPE, factor=1, mpp=MPP, chunk=CHUNK, name="slide-1", extra_metadata={"overlap": 64}
    )
    for y in range(0, SHAPE[0], 25):
        canvas.flush_until(y)
        canvas.add(probs[:, y : y + 25, :], 0, y)
    canvas.close()
    truth = np.floor(probs.astype(np.float64) * 255 + 0.5).astype(np.uint8)
    return path, truth


def _reference_pyramid(level0: np.ndarray) -> list[np.ndarray]:
    """Independent 2x mean pyramid: mean of the pixels present in each 2x2 block, half up."""
    levels = [level0]
    while max(levels[-1].shape[1:]) > CHUNK:
        a = levels[-1].astype(np.float64)
        c, h, w = a.shape
        out = np.zeros((c, -(-h // 2), -(-w // 2)))
        for i in range(out.shape[1]):
            for j in range(out.shape[2]):
                out[:, i, j] = a[:, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2].mean(axis=(1, 2))
        levels.append(np.floor(out + 0.5).astype(np.uint8))
    return levels


def test_ngff_04_metadata_structure(written) -> None:
    path, _ = written
    zgroup = json.loads((path / ".zgroup").read_text())
    assert zgroup == {"zarr_format": 2}
    attrs = json.loads((path / ".zattrs").read_text())
    (ms,) = attrs["multiscales"]
    assert ms["version"] == "0.4" and ms["name"] == "slide-1"
    assert ms["axes"] == [
        {"name": "c", "type": "channel"},
        {"name": "y", "type": "space", "unit": "micrometer"},
        {"name": "x", "type": "space", "unit": "micrometer"},
    ]
    n = len(ms["datasets"])
    assert n == 4  # 130 -> 65 -> 33 -> 17 <= 32
    for k, ds in enumerate(ms["datasets"]):
        assert ds["path"] == str(k)
        assert ds["coordinateTransformations"] == [
            {"type": "scale", "scale": [1.0, MPP * 2**k, MPP * 2**k]}
        ]
        zarray = json.loads((path / ds["path"] / ".zarray").read_text())
        assert zarray["dtype"] == "|u1" and zarray["dimension_separator"] == "/"
        assert zarray["chunks"] == [1, CHUNK, CHUNK]
        assert zarray["shape"][0] == len(CHANNELS)
    omero = attrs["omero"]
    assert [c["label"] for c in omero["channels"]] == [c.name for c in CHANNELS]
    for ch, meta in zip(CHANNELS, omero["channels"], strict=True):
        assert meta["color"] == ch.color[1:].upper() and len(meta["color"]) == 6
        assert meta["window"] == {"start": 0.0, "end": 255.0, "min": 0.0, "max": 255.0}
    assert attrs["virtime"] == {"factor": 1, "overlap": 64}


def test_level0_and_pyramid_values(written) -> None:
    import zarr

    path, truth = written
    g = zarr.open_group(str(path), mode="r")
    ref = _reference_pyramid(truth)
    assert len(ref) == 4
    for k, expected in enumerate(ref):
        np.testing.assert_array_equal(np.asarray(g[str(k)][:]), expected)


def test_downsample_2x_rounds_half_up() -> None:
    block = np.array([[[0, 1], [0, 1]], [[1, 1], [1, 2]]], np.uint8)  # means 0.5 and 1.25
    np.testing.assert_array_equal(downsample_2x(block)[:, 0, 0], [1, 1])


def test_ome_tiff_export_matches_zarr(written, tmp_path) -> None:
    import zarr

    path, _ = written
    out = export_ome_tiff(path, tmp_path / "slide.ome.tif", tile=16)
    g = zarr.open_group(str(path), mode="r")
    with tifffile.TiffFile(out) as tif:
        assert tif.is_ome
        series = tif.series[0]
        assert series.axes == "CYX"
        assert len(series.levels) == 4
        for k, level in enumerate(series.levels):
            np.testing.assert_array_equal(level.asarray(), np.asarray(g[str(k)][:]))
        ome = ET.fromstring(tif.ome_metadata)
    ns = {"ome": "http://www.openmicroscopy.org/Schemas/OME/2016-06"}
    pixels = ome.find(".//ome:Pixels", ns)
    assert float(pixels.get("PhysicalSizeX")) == MPP and pixels.get("SizeC") == "23"
    channels = pixels.findall("ome:Channel", ns)
    assert [c.get("Name") for c in channels] == [c.name for c in CHANNELS]
    dapi = int(channels[0].get("Color")) & 0xFFFFFFFF
    assert dapi == 0x0000FFFF  # #0000FF, opaque: RGBA packed
    assert not list(tmp_path.glob("*.partial"))


def test_export_refuses_a_non_zarr(tmp_path) -> None:
    with pytest.raises(InputDataError, match="not a Zarr"):
        export_ome_tiff(tmp_path, tmp_path / "x.ome.tif")


def test_read_ome_zarr_finds_levels_names_mpp_and_damage(written, tmp_path) -> None:
    import shutil

    from virtime.channels import CHANNEL_NAMES
    from virtime.io.omezarr import VerifiedArray, read_ome_zarr

    path, truth = written
    image = read_ome_zarr(path)
    assert image.mpp == MPP and image.channels == CHANNEL_NAMES
    assert image.virtime["overlap"] == 64 and image.model_hash == ""
    assert all(isinstance(a, VerifiedArray) for a in image.levels)
    assert [tuple(a.shape[1:]) for a in image.levels] == [
        r.shape[1:] for r in _reference_pyramid(truth)]
    np.testing.assert_array_equal(np.asarray(image.levels[0][:]), truth)
    copy = tmp_path / "copy.ome.zarr"
    shutil.copytree(path, copy)
    (copy / "1" / "0" / "0" / "0").unlink()  # a lost chunk of level 1
    assert len(read_ome_zarr(copy, verify=False).levels) == len(image.levels)  # only opens
    with pytest.raises(InputDataError, match="chunk missing"):
        read_ome_zarr(copy)
    with pytest.raises(InputDataError, match="cannot open"):
        read_ome_zarr(tmp_path / "nope.zarr")
