"""The _core.pyi stub and the compiled binding cannot drift: names and parameters must agree."""

from __future__ import annotations

import ast
import importlib.util
import inspect
import re
from pathlib import Path

import pytest

from virtime import _core

STUB = Path(importlib.util.find_spec("virtime").origin).parent / "_core.pyi"
_SKIP = {"__init__", "__eq__", "__hash__", "__index__", "__int__", "__ne__", "__repr__", "__str__",
         "__getstate__", "__setstate__", "name", "value", "__members__", "__entries"}


def _stub_tree() -> dict[str, dict[str, list[str] | None]]:
    """{top-level name: {member: [parameter names] or None for attributes}}."""
    out: dict[str, dict[str, list[str] | None]] = {}
    for node in ast.parse(STUB.read_text()).body:
        if isinstance(node, ast.FunctionDef):
            out.setdefault("", {})[node.name] = [a.arg for a in node.args.args]
        elif isinstance(node, ast.ClassDef):
            members: dict[str, list[str] | None] = {}
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    members[item.name] = [a.arg for a in item.args.args]
                elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    members[item.target.id] = None
            out[node.name] = members
    return out


def _runtime_params(obj: object) -> list[str]:
    """Parameter names from pybind11's generated signature line(s) in the docstring."""
    doc = (getattr(obj, "__doc__", "") or "").strip().splitlines()
    first = next((line for line in doc if "(" in line), "")
    inside = first[first.find("(") + 1 : first.rfind(")")]
    return [m.group(1) for m in re.finditer(r"(?:^|,\s*)(\w+)\s*:", inside)]


def test_every_runtime_name_is_in_the_stub_and_back():
    stub = _stub_tree()
    runtime = {n for n in dir(_core) if not n.startswith("__")}
    stubbed = (set(stub) - {""}) | set(stub.get("", {}))
    assert runtime == stubbed, f"missing from stub: {runtime - stubbed}; stale: {stubbed - runtime}"


def test_functions_and_methods_have_the_same_parameters():
    stub = _stub_tree()
    for name, params in stub.get("", {}).items():
        assert _runtime_params(getattr(_core, name)) == params, name
    for cls_name, members in stub.items():
        if not cls_name:
            continue
        cls = getattr(_core, cls_name)
        public = {n for n in vars(cls) if not n.startswith("_") and n not in _SKIP}
        assert public <= set(members), f"{cls_name}: not in stub: {public - set(members)}"
        for member, params in members.items():
            if member in _SKIP or params is None:
                continue
            attr = inspect.getattr_static(cls, member)
            if isinstance(attr, property) or type(attr).__name__ == "property":
                continue
            assert _runtime_params(getattr(cls, member)) == params, f"{cls_name}.{member}"
