"""The slide page's features: the per-channel table first; the hundreds of channel-pair features
after it, folded away; slide descriptors between."""

from __future__ import annotations

import html
import itertools
import re

import pytest

from virtime.channels import CHANNEL_NAMES, PROTEIN_CHANNELS
from virtime.view import write_slide_page


@pytest.fixture(scope="module")
def page(tmp_path_factory, syn):
    pairs = list(itertools.combinations(PROTEIN_CHANNELS, 2))
    feats = {f"{c}.density": 0.01 * i for i, c in enumerate(CHANNEL_NAMES)}  # with TRITC, Cy5
    feats |= {f"{a}|{b}.or_density": 0.5 for a, b in pairs}
    feats |= {f"{a}&{b}.and_density": 0.1 for a, b in pairs}
    feats |= {"tissue.area_mm2": 1.25, "tiles_failed": 0}
    out = syn.make_output(tmp_path_factory.mktemp("page"), features=feats)
    text = write_slide_page(out).read_text(encoding="utf-8")
    return text.split("<h2>Slide features</h2>", 1)[1], 2 * len(pairs)


def test_channel_table_comes_before_the_pair_features(page):
    section, n_pairs = page
    assert n_pairs == 420
    channel_table = section.index("<th>density</th>")
    first_pair = min(m.start() for m in re.finditer(r"[\w-]+(\||&amp;)[\w-]+\.\w+_density", section))
    assert channel_table < first_pair
    # Every channel's row is in that first table.
    first_table = section[:section.index("</table>", channel_table)]
    assert all(f"<th>{html.escape(c)}</th>" in first_table for c in PROTEIN_CHANNELS)


def test_pair_features_are_folded_in_one_details_element(page):
    section, n_pairs = page
    assert section.count("<details") == 1
    inside = section[section.index("<details"):section.index("</details>")]
    outside = section.replace(inside, "")
    pattern = r"[\w-]+(?:\||&amp;)[\w-]+\.\w+_density"
    assert len(re.findall(pattern, inside)) == n_pairs and not re.findall(pattern, outside)
    assert f"{n_pairs} channel-pair features" in inside
    assert "tissue.area_mm2" in outside  # slide descriptors stay in view


def test_background_channels_follow_the_proteins_labelled_as_such(page):
    section, _ = page
    table = section[:section.index("</table>")]
    rows = re.findall(r"<th>([^<]+)</th>\s*<td>", table)
    assert rows == [*PROTEIN_CHANNELS, "TRITC (background)", "Cy5 (background)"]
