"""The package's import graph: no cycles, and no module imports another module's private names.

Walks every module's ``import`` statements with :mod:`ast` (module-level and the lazy ones inside
functions alike, since a lazy import is still a dependency), so the test reads the source, not
what happens to be imported at run time.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "python"
#: The compiled extension is private by design: only its Python wrappers import it.
PRIVATE_ALLOWED = {"virtime._core"}


def _modules() -> dict[str, Path]:
    modules = {}
    for path in (PACKAGE_ROOT / "virtime").rglob("*.py"):
        parts = path.relative_to(PACKAGE_ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _imported(module: str, path: Path, node: ast.AST) -> list[tuple[str, str | None]]:
    """``(imported module, imported name or None)`` pairs of one import statement."""
    if isinstance(node, ast.Import):
        return [(alias.name, None) for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:
        base = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        source = ".".join(base + ([node.module] if node.module else []))
    else:
        source = node.module or ""
    return [(source, alias.name) for alias in node.names]


def _graph() -> tuple[dict[str, set[str]], list[str]]:
    """Module dependency edges, and every private-name import as a readable line."""
    modules = _modules()
    edges: dict[str, set[str]] = {name: set() for name in modules}
    private: list[str] = []
    for module, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        private += _private_attribute_uses(module, path, tree, modules)
        for node in ast.walk(tree):
            for source, name in _imported(module, path, node):
                for target in (source, f"{source}.{name}" if name else None):
                    if target in modules and target != module and not module.startswith(target + "."):
                        edges[module].add(target)
                if (name and name.startswith("_") and not name.startswith("__")
                        and source.startswith("virtime") and f"{source}.{name}" not in PRIVATE_ALLOWED
                        and f"{source}.{name}" not in modules):
                    private.append(f"{module} imports {name} from {source}")
    return edges, private


def _private_attribute_uses(module: str, path: Path, tree: ast.AST,
                            modules: dict[str, Path]) -> list[str]:
    """``alias._name`` where ``alias`` is another virtime module bound by an import."""
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        for source, name in _imported(module, path, node):
            if name is None and source in modules:
                alias = next(a for a in node.names if a.name == source)
                if alias.asname:
                    aliases[alias.asname] = source
            elif name and f"{source}.{name}" in modules:
                alias = next(a for a in node.names if a.name == name)
                aliases[alias.asname or name] = f"{source}.{name}"
    return [f"{module} uses {node.value.id}.{node.attr} of {aliases[node.value.id]}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
            and node.value.id in aliases and aliases[node.value.id] != module
            and node.attr.startswith("_") and not node.attr.startswith("__")
            and f"{aliases[node.value.id]}.{node.attr}" not in PRIVATE_ALLOWED
            and f"{aliases[node.value.id]}.{node.attr}" not in modules]


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in edges:
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_checker_finds_a_planted_cycle() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(edges) == [["a", "b", "c"]]


def test_no_import_cycles() -> None:
    cycles = _cycles(_graph()[0])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_no_module_imports_another_modules_private_names() -> None:
    private = _graph()[1]
    assert not private, "\n".join(private)


@pytest.mark.parametrize("low", ["virtime.io"])
def test_io_imports_nothing_above_it(low: str) -> None:
    edges = _graph()[0]
    above = sorted(f"{m} -> {t}" for m in edges if m == low or m.startswith(low + ".")
                   for t in edges[m] if not (t == low or t.startswith(low + "."))
                   and t not in {"virtime", "virtime.errors", "virtime.channels"}  # leaf registries
                   and not t.startswith("virtime._"))
    assert not above, above
