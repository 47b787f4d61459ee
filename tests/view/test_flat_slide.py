"""The viewer on a single-level (flat) slide: a zoomed-out H&E tile covers much of level 0, and
is read in bounded blocks, never as one region as large as the slide."""

from __future__ import annotations

import numpy as np
import pytest

from virtime.view import ViewSource


@pytest.mark.slow  # decodes a 4096² slide
def test_zoomed_out_tile_of_a_flat_slide_is_read_in_bounded_blocks(tmp_path, syn, rng):
    """Old code read the whole 4096² level in one call for the zoom-0 tile (50 MB; 1.8 GB for a
    24576² slide)."""
    from virtime.simulate.slides import write_flat_slide
    from virtime.stitch.thumbnail import STRIP_BYTES

    colours = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    flat = write_flat_slide(tmp_path / "flat.tif", colours, mpp=0.5)
    source = ViewSource(syn.make_output(tmp_path, "F", slide=flat))
    assert source.slide.level_count == 1 and source.max_zoom == 4
    spy = source.slide = syn.ReadSpy(source.slide)
    tile = source.he_array(0, 0, 0)  # the whole slide in one 256-px tile: 16 px per slide tile
    assert max(spy.read_bytes) <= STRIP_BYTES < 4096 * 4096 * 3
    assert sum(spy.read_bytes) == 4096 * 4096 * 3  # each pixel once
    # the exact area mean of the slide (each slide tile one colour)
    np.testing.assert_array_equal(tile, np.repeat(np.repeat(colours, 16, axis=0), 16, axis=1))
    spy.read_bytes.clear()
    near = source.he_array(4, 3, 5)  # level 0 at full resolution: one plain read, as before
    np.testing.assert_array_equal(near, np.broadcast_to(colours[5, 3], (256, 256, 3)))
    assert spy.read_bytes == [256 * 256 * 3]
