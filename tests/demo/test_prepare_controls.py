"""The demo keeps the background channels' features beside the analysed ones (negative controls),
outside the names it tests; a ground truth without them simply has no controls."""

from __future__ import annotations

import numpy as np
import pandas as pd

from virtime.demo.run import prepare_features
from virtime.stats import associate, join_features


def _table(rng, n=40, background=True):
    y = np.tile([1, 0], n // 2)
    t = pd.DataFrame({"slide_id": [f"S{i}" for i in range(n)],
                      "patient_id": [f"P{i}" for i in range(n)],
                      "CD8.density": rng.normal(size=n) + 2.0 * y,
                      "CK.density": rng.normal(size=n)})
    if background:
        t["TRITC.density"] = rng.normal(size=n) + 0.5 * y
        t["Cy5.density"] = 0.0  # constant: nothing to test
        t["TRITC.snr"] = rng.normal(size=n)  # a metric the demo does not analyse
    clinical = pd.DataFrame({"patient_id": t["patient_id"], "cancer_type": "LUNG",
                             "subtype": "LUAD", "KRAS": y})
    return t, clinical


def test_background_densities_travel_as_controls(rng):
    table, clinical = _table(rng)
    frame, names = prepare_features(table, ["CD8.density", "CK.density"], "virtual")
    assert names == ["CD8.density", "CK.density"]
    assert list(frame.columns) == ["slide_id", "patient_id", *names, "TRITC.density"]
    res = associate(join_features(frame, clinical), features=tuple(names),
                    levels=("pan-cancer",), adjust="none")
    assert set(res.control_tests["feature"].astype(str)) == {"TRITC.density"}
    assert set(res.summary["feature"].astype(str)) == set(names)


def test_without_background_channels_there_are_no_controls(rng):
    table, _ = _table(rng, background=False)
    frame, names = prepare_features(table, ["CD8.density", "CK.density"], "ground truth")
    assert list(frame.columns) == ["slide_id", "patient_id", *names]
