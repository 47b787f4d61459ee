"""The OME-TIFF export as QuPath / Bio-Formats and napari read it: OME-XML valid against the OME
2016-06 schema (ome-types validates with the XSD it bundles, no network), channel names and
colours, and the pyramid in SubIFDs of every channel page (checked with tifffile)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from virtime.channels import CHANNELS
from virtime.stitch.canvas import StreamingCanvas
from virtime.stitch.ometiff import export_ome_tiff, ome_color

SHAPE = (150, 260)
CHUNK = 32


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    rng = np.random.default_rng(3)
    root = tmp_path_factory.mktemp("ometiff")
    canvas = StreamingCanvas(root / "s.ome.zarr", SHAPE, factor=1, mpp=2.0, chunk=CHUNK,
                             name="S1")
    canvas.add(rng.random((len(CHANNELS), *SHAPE), dtype=np.float32), 0, 0)
    canvas.close()
    return root / "s.ome.zarr", export_ome_tiff(root / "s.ome.zarr", root / "s.ome.tif", tile=32)


def test_ome_xml_is_valid_against_the_ome_schema(exported):
    ome_types = pytest.importorskip("ome_types")
    pytest.importorskip("lxml")
    _, path = exported
    with tifffile.TiffFile(path) as tif:
        xml = tif.ome_metadata
    ome_types.validate_xml(xml)  # raises on any schema violation
    ome = ome_types.from_xml(xml)
    (image,) = ome.images
    px = image.pixels
    assert (px.size_c, px.size_y, px.size_x) == (len(CHANNELS), *SHAPE)
    assert px.physical_size_x == 2.0 and str(px.physical_size_x_unit.value) == "µm"
    assert [c.name for c in px.channels] == [c.name for c in CHANNELS]
    for ch, ref in zip(px.channels, CHANNELS):
        assert ch.color.as_rgb_tuple()[:3] == tuple(int(ref.color[i:i + 2], 16) for i in (1, 3, 5))
    # the check has teeth: a Color outside int32 is refused by the schema
    bad = xml.replace(f'Color="{ome_color(CHANNELS[0].color)}"', 'Color="4294967295"', 1)
    with pytest.raises(Exception, match="(?i)color|valid"):
        ome_types.validate_xml(bad)


def test_ome_color_is_signed_rgba():
    assert ome_color("#0000FF") == 0x0000FFFF
    assert ome_color("#FF00FF") == 0xFF00FFFF - (1 << 32)
    assert ome_color("#FFFFFF") == -1


def test_pyramid_is_in_subifds_of_every_channel_page(exported):
    import zarr

    zpath, path = exported
    group = zarr.open_group(str(zpath), mode="r")
    n_levels = len(group.attrs["multiscales"][0]["datasets"])
    assert n_levels == 5  # 260 -> 130 -> 65 -> 33 -> 17 <= 32
    with tifffile.TiffFile(path) as tif:
        assert tif.is_bigtiff and tif.is_ome
        top = tif.pages[:len(CHANNELS)]
        assert len(tif.pages) == len(CHANNELS)  # reduced levels are not top-level pages
        for c, page in enumerate(top):
            assert page.shape == SHAPE and page.is_tiled and page.tilewidth == 32
            assert len(page.subifds) == n_levels - 1
        series = tif.series[0]
        assert series.axes == "CYX" and len(series.levels) == n_levels
        for k, level in enumerate(series.levels):
            sub = level.pages[0]
            assert sub.subfiletype == (0 if k == 0 else 1)  # FILETYPE_REDUCEDIMAGE
            np.testing.assert_array_equal(level.asarray(), np.asarray(group[str(k)][:]))
            res = sub.get_resolution(tifffile.RESUNIT.MICROMETER)
            assert res[0] == pytest.approx(1 / (2.0 * 2**k))
