"""Imports only point down: holitok (the codec) <- holitok_slm <- data_prep <- eval <- demo. Read from the source (AST),
so an upward import fails here before it turns into a circle somewhere else."""
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
