"""The README stays one screen that points into docs/, and neither carries history or stale names.

tests/docs/test_readme.py runs the code blocks of both; this file checks their shape: the README's
length, that its docs/ links resolve and every reference page is linked, that the dotted
``virtime.…`` names the pages mention exist, and that no page tells history (issue numbers, "used
to be", deprecated aliases) or names code that is gone.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
CHANGELOG = ROOT / "docs" / "changelog.md"  # the one page allowed to tell history
MAX_README_LINES = 300

# Names of code that translate never calls or that no longer exists, and claims that were wrong.
STALE = ("blend_tile", "tile_channel_stats", "pool_weighted_torch", "cuda_pack_tiles",
         "(what, model, out, config)")
HISTORY = (
    (re.compile(r"(?<![\w&])#\d+(?![\w-])"), "an issue number"),
    (re.compile(r"\bissues? #?\d+", re.IGNORECASE), "an issue number"),
    (re.compile(r"\bused to be\b", re.IGNORECASE), "history ('used to be')"),
    (re.compile(r"\bdeprecat", re.IGNORECASE), "a deprecated alias"),
    (re.compile(r"\bbit for bit\b", re.IGNORECASE), "a 'bit for bit' claim (say what was compared)"),
)
# Dotted names that are Parquet/JSON metadata keys, not Python objects.
METADATA_KEYS = {"virtime.version", "virtime.model_hash", "virtime.cells.tumour_mm2",
                 "virtime.merge.left_out"}


def stale_mentions(text: str, history: bool = True) -> list[str]:
    """What in ``text`` is a stale name or (with ``history``) history, one entry per finding."""
    found = [f"stale name {name!r}" for name in STALE if name in text]
    if history:
        for pattern, what in HISTORY:
            found += [f"{what}: {m.group(0)!r}" for m in pattern.finditer(text)]
    return found


def _resolves(dotted: str) -> bool:
    """Whether ``virtime.a.b`` is an importable module or an attribute chain below one."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def dotted_names(text: str) -> set[str]:
    """The ``virtime.x.y`` names a page mentions (file names and metadata keys left out)."""
    names = {n.rstrip(".") for n in re.findall(r"\bvirtime(?:\.[A-Za-z_]\w*)+", text)}
    return {n for n in names if n not in METADATA_KEYS
            and not n.endswith((".md", ".py", ".json", ".jsonl", ".csv", ".lock", ".safetensors"))}


def test_readme_is_one_screen():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines (at most 300)"


def test_readme_links_every_docs_page_and_each_resolves():
    readme = README.read_text(encoding="utf-8")
    linked = set(re.findall(r"\]\((docs/[^)#\s]+\.md)(?:#[^)\s]*)?\)", readme))
    assert linked, "the README links no docs/ page"
    missing = sorted(p for p in linked if not (ROOT / p).is_file())
    assert not missing, f"README links to docs pages that do not exist: {missing}"
    unlinked = sorted(f"docs/{p.name}" for p in DOCS if f"docs/{p.name}" not in linked
                      and p != CHANGELOG)
    assert not unlinked, f"docs pages the README does not link: {unlinked}"


@pytest.mark.parametrize("path", [README, *DOCS], ids=lambda p: p.name)
def test_no_history_or_stale_names(path: Path):
    findings = stale_mentions(path.read_text(encoding="utf-8"), history=path != CHANGELOG)
    assert not findings, f"{path.relative_to(ROOT)}: {findings}"


@pytest.mark.parametrize("path", [README, *DOCS], ids=lambda p: p.name)
def test_dotted_names_exist(path: Path):
    missing = sorted(n for n in dotted_names(path.read_text(encoding="utf-8")) if not _resolves(n))
    assert not missing, f"{path.relative_to(ROOT)} names what virtime does not have: {missing}"


def test_checks_can_fail():
    text = ("Fixed in #15; the dict it used to be; `old_name` is a deprecated alias;\n"
            "CUDA kernels equal the CPU bit for bit; blend_tile and pool_weighted_torch run on the GPU;\n"
            "see issue 26. Every entry point takes (what, model, out, config).")
    findings = stale_mentions(text)
    assert sum(f.startswith("an issue number") for f in findings) == 2
    for what in ("used to be", "deprecated", "bit for bit", "'blend_tile'", "'pool_weighted_torch'",
                 "(what, model, out, config)"):
        assert any(what in f for f in findings), (what, findings)
    # Anchors, hex colours and HTML entities are not issue numbers.
    assert stale_mentions("[tour](#1-the-demo) colour #1f77b4 &#8212; ok") == []
    assert stale_mentions("see #15", history=False) == []
    assert dotted_names("`virtime.stain.get_normalizer` and virtime.version") == {
        "virtime.stain.get_normalizer"}
    assert _resolves("virtime.stain.get_normalizer")
    assert not _resolves("virtime.stain.no_such_normalizer")
    assert not _resolves("virtime.no_such_module.x")
