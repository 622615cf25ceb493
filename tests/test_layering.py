"""Imports only point down: holitok (the codec) <- holitok_slm <- data_prep <- eval <- demo, and no two modules of a
package import each other (directly or round a longer circle, imports inside functions included). Read from the
source (AST), so a bad import fails here before it turns into an import-order bug somewhere else."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"holitok": ROOT / "tokenizer" / "holitok", "holitok_slm": ROOT / "holitok_slm",
            "data_prep": ROOT / "data_prep", "eval": ROOT / "eval", "demo": ROOT / "demo"}
LEVEL = {"holitok": 0, "holitok_slm": 1, "data_prep": 2, "eval": 3, "demo": 4}
# The console script fronts every layer (`holitok-slm serve` opens the demo), so it sits on top whatever its package.
ENTRY_POINTS = {ROOT / "holitok_slm" / "cli.py": LEVEL["demo"]}


def imported_packages(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return [(line, name.split(".")[0]) for line, name in found if name.split(".")[0] in LEVEL]


def upward_imports(packages: dict[str, Path]) -> list[str]:
    problems = []
    for package, root in packages.items():
        for path in sorted(root.rglob("*.py")):
            level = ENTRY_POINTS.get(path, LEVEL[package])
            for line, target in imported_packages(path):
                if target != package and LEVEL[target] > level:
                    shown = path.relative_to(root.parent) if root.parent in path.parents else path
                    problems.append(f"{shown}:{line} ({package}) imports {target}")
    return problems


def test_no_package_imports_a_layer_above_it():
    assert upward_imports(PACKAGES) == []


def test_a_planted_upward_import_is_caught(tmp_path):
    planted = tmp_path / "holitok"
    planted.mkdir()
    (planted / "bad.py").write_text("from holitok_slm.model.unified import UnifiedModel\nimport demo.app\nimport holitok.audio\n")
    assert upward_imports({"holitok": planted}) == ["holitok/bad.py:1 (holitok) imports holitok_slm",
                                                    "holitok/bad.py:2 (holitok) imports demo"]


def runtime_nodes(tree: ast.AST):
    """ast.walk without the bodies of ``if TYPE_CHECKING:`` (annotation-only imports never run)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            test = child.test if isinstance(child, ast.If) else None
            if test is not None and (getattr(test, "id", None) == "TYPE_CHECKING"
                                     or getattr(test, "attr", None) == "TYPE_CHECKING"):
                todo.extend(child.orelse)
                continue
            todo.append(child)


def module_graph(package: str, root: Path) -> dict[str, set[str]]:
    """module -> the modules of the same package it imports, anywhere in the file (imports inside functions count:
    they hide a circle, they do not remove it). ``from . import x`` resolves to the submodule x when there is one."""
    modules = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root).with_suffix("").parts
        name = ".".join((package,) + (parts[:-1] if parts[-1] == "__init__" else parts))
        modules[name] = path
    graph = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        base = name.split(".") if is_package else name.split(".")[:-1]
        edges = set()
        for node in runtime_nodes(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    anchor = base[: len(base) - (node.level - 1)]
                    module = ".".join(anchor + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                targets = [f"{module}.{alias.name}" if f"{module}.{alias.name}" in modules else module
                           for alias in node.names]
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name and not name.startswith(target + "."):  # a package's own __init__
                    edges.add(target)
        graph[name] = edges
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, groups, counter = {}, {}, [], set(), [], [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(groups)


def test_no_import_circle_inside_a_package():
    found = {package: import_cycles(module_graph(package, root)) for package, root in PACKAGES.items()}
    assert {k: v for k, v in found.items() if v} == {}


def test_a_planted_circle_is_caught(tmp_path):
    root = tmp_path / "pkg"
    root.mkdir()
    (root / "__init__.py").write_text("")
    (root / "a.py").write_text("from .b import thing\n")
    (root / "b.py").write_text("def thing():\n    from . import a  # hidden inside a function\n")
    (root / "c.py").write_text("from typing import TYPE_CHECKING\nimport pkg.a\nif TYPE_CHECKING:\n    import pkg.d\n")
    (root / "d.py").write_text("from . import c\n")  # c -> d only for annotations: no circle
    assert import_cycles(module_graph("pkg", root)) == [["pkg.a", "pkg.b"]]
