"""The public surface after ``import virtime``: entry points from the top, every subpackage reachable."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import virtime

PACKAGE_DIR = Path(virtime.__file__).parent

# (public name, the object it must be) — written out here, not read from virtime's own table.
ENTRY_POINTS = [
    ("open_slide", "virtime.slide", "open_slide"),
    ("load_model", "virtime.models.checkpoints", "load"),
    ("translate", "virtime.translation.pipeline", "translate"),
    ("TranslateConfig", "virtime.translation.config", "TranslateConfig"),
    ("read_features", "virtime.io.parquet", "read_features"),
    ("merge_features", "virtime.features.merge", "merge_features"),
    ("associate", "virtime.stats.associations", "associate"),
    ("survival_analysis", "virtime.stats.survival", "survival_analysis"),
]


def _subpackages_on_disk() -> list[str]:
    """Every package and public module directly under virtime/, found by walking the folder."""
    return sorted(m.name for m in pkgutil.iter_modules([str(PACKAGE_DIR)])
                  if not m.name.startswith("_"))


@pytest.mark.parametrize(("name", "module", "attr"), ENTRY_POINTS)
def test_entry_point_is_the_library_object(name: str, module: str, attr: str) -> None:
    assert getattr(virtime, name) is getattr(importlib.import_module(module), attr)
    assert name in virtime.__all__
    assert name in dir(virtime)


@pytest.mark.parametrize("name", _subpackages_on_disk())
def test_every_subpackage_is_an_attribute(name: str) -> None:
    mod = getattr(virtime, name)
    assert inspect.ismodule(mod) and mod.__name__ == f"virtime.{name}"
    assert name in dir(virtime)


def test_dir_lists_nothing_private_and_unknown_names_raise() -> None:
    assert not [n for n in dir(virtime) if n.startswith("_") and n != "__version__"]
    with pytest.raises(AttributeError, match="no_such_thing"):
        virtime.no_such_thing  # noqa: B018


def test_import_virtime_stays_light() -> None:
    """``import virtime`` must not pull torch, the compiled core or the statistics stack."""
    code = ("import sys, virtime; heavy = [m for m in ('torch', 'virtime._core', 'statsmodels', "
            "'lifelines', 'onnxruntime') if m in sys.modules]; print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_one_progress_switch() -> None:
    from virtime.embed import EmbedConfig

    assert EmbedConfig(show_progress=False).show_progress is False
    with pytest.raises(TypeError, match="progress"):
        EmbedConfig(progress=False)


def test_one_reader_and_one_merge_of_features() -> None:
    """Every subpackage's public names: one ``read_features`` (one object) and one merge."""
    readers, merges = set(), set()
    for name in _subpackages_on_disk():
        mod = getattr(virtime, name)
        for attr in getattr(mod, "__all__", ()):
            if "read_features" in attr or "load_features" in attr:
                readers.add((attr, id(getattr(mod, attr))))
            if "merge" in attr and "feature" in attr:
                merges.add((attr, id(getattr(mod, attr))))
    assert readers == {("read_features", id(virtime.read_features))}
    assert merges == {("merge_features", id(virtime.merge_features))}
    assert not hasattr(virtime.io.SlideFolder, "read_features")  # folder.features() instead


def test_view_is_the_viewer_function() -> None:
    assert callable(virtime.view) and "view" in virtime.__all__
    assert inspect.signature(virtime.view) == inspect.signature(virtime.view.view)
    assert list(inspect.signature(virtime.view).parameters)[:2] == ["path", "output"]
