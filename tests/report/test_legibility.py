"""Report figures a reader can read: channel colours told apart, legend text large enough,
labels upright, axes in the data's units. Measured on the figures, against numpy references."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from virtime.channels import CHANNELS, PROTEIN_CHANNELS


def _srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """CIELAB (D65) of sRGB colours in [0, 1] (IEC 61966-2-1 and CIE 15 formulas)."""
    lin = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    m = np.array([[0.4124564, 0.3575761, 0.1804375],
                  [0.2126729, 0.7151522, 0.0721750],
                  [0.0193339, 0.1191920, 0.9503041]])
    t = (lin @ m.T) / np.array([0.95047, 1.0, 1.08883])
    d = 6 / 29
    f = np.where(t > d ** 3, np.cbrt(t), t / (3 * d * d) + 4 / 29)
    return np.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], 1)


def _hex(h: str) -> np.ndarray:
    return np.array([int(h[i:i + 2], 16) for i in (1, 3, 5)]) / 255.0


def test_lab_reference_matches_published_values():
    lab = _srgb_to_lab(np.array([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]))
    np.testing.assert_allclose(lab, [[100.0, 0.0, 0.0], [53.24, 80.09, 67.20],
                                     [32.30, 79.19, -107.86]], atol=0.05)


def test_protein_channel_colours_are_told_apart():
    """Every two protein channels differ by ΔE*ab >= 20 (a glance tells them apart; CD4 and CD20
    were 9.5 apart, two near-identical pinks)."""
    colours = {c.name: c.color for c in CHANNELS if c.name in PROTEIN_CHANNELS}
    lab = _srgb_to_lab(np.array([_hex(h) for h in colours.values()]))
    names = list(colours)
    dist = {(names[i], names[j]): float(np.linalg.norm(lab[i] - lab[j]))
            for i, j in itertools.combinations(range(len(names)), 2)}
    closest = min(dist, key=dist.get)
    assert dist[closest] >= 20.0, (closest, round(dist[closest], 1))


@pytest.fixture(scope="module")
def cohort():
    from virtime.stats import join_features

    rng = np.random.default_rng(5)
    types = ["COAD", "LUAD", "UEC", "SKCM", "BRCA", "LIHC"]  # six sectors: one at the bottom
    n = 12 * len(types)
    ids = [f"P{i:03d}" for i in range(n)]
    ct = np.repeat(types, 12)
    feats = pd.DataFrame({"patient_id": ids, **{f"{c}.density": rng.random(n)
                                                for c in PROTEIN_CHANNELS}})
    clinical = pd.DataFrame({"patient_id": ids, "cancer_type": ct, "subtype": ct,
                             "os_time": rng.exponential(30, n).round(1),
                             "os_event": rng.integers(0, 2, n)})
    return join_features(feats, clinical)


def _cap_height_px(text, dpi: float) -> float:
    """Height of a capital letter of ``text``'s font, in pixels at ``dpi`` (glyph outlines)."""
    from matplotlib.textpath import TextPath

    path = TextPath((0, 0), "H", size=text.get_fontsize(), prop=text.get_fontproperties())
    return path.get_extents().height * dpi / 72.0


def test_spectrum_legend_legible_and_labels_upright(cohort):
    import inspect

    from virtime.report.html import figure_block
    from virtime.stats.plots import spectrum_plot

    fig = spectrum_plot(cohort)
    dpi = inspect.signature(figure_block).parameters["dpi"].default  # as the report renders it
    legend = fig.axes[0].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == list(PROTEIN_CHANNELS)
    assert min(_cap_height_px(t, dpi) for t in legend.get_texts()) >= 10.0
    labels = [t for t in fig.axes[0].texts if t.get_text() in set(cohort.data["cancer_type"])]
    assert len(labels) == 6
    for t in labels:  # upright: the glyphs' up vector points up (rotation within ±90°)
        angle = np.deg2rad(t.get_rotation())
        assert np.cos(angle) >= -1e-9, (t.get_text(), t.get_rotation())
        assert _cap_height_px(t, dpi) >= 10.0
    # The figure fits the report's column, so the browser does not shrink the text.
    fig.canvas.draw()
    assert fig.get_figwidth() * dpi <= 1100


def test_kaplan_meier_axis_names_the_time_and_its_unit(cohort):
    from virtime.stats.plots import km_feature_plot, km_plot

    t = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    e = np.array([1, 0, 1, 1, 0, 1])
    labels = np.array(["a", "b"] * 3)
    fig = km_plot(t, e, labels, time_unit="months")
    assert fig.axes[0].get_xlabel() == "os_time (months)"
    fig = km_feature_plot(cohort, "CD8.density")
    xlabel = fig.axes[0].get_xlabel()
    assert xlabel.startswith("os_time") and "timeline" not in xlabel
    assert "unit" in xlabel  # no unit known: says the clinical table's unit


def test_report_survival_section_names_the_unit_on_its_km_axes(cohort, monkeypatch):
    import virtime.report.standard as standard
    from virtime.stats import survival_analysis

    figures = []
    real = standard.figure_block

    def keep(fig, caption=""):
        figures.append(fig)
        return real(fig, caption)

    monkeypatch.setattr(standard, "figure_block", keep)
    surv = survival_analysis(cohort, features=("CD8.density", "CD3.density", "CK.density"),
                             show_progress=False)
    standard.survival_section(surv, cohort, km_features=1, time_unit="days")
    km = [f for f in figures if f.axes[0].get_ylabel() == "survival probability"]
    assert len(km) == 2 and all(f.axes[0].get_xlabel() == "os_time (days)" for f in km)
