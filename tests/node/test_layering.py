"""The rule written in node/__init__.py holds: imports run cli → service → web → work → dimse → intake → settings."""

from __future__ import annotations

import ast
from pathlib import Path

import node

ROOT = Path(node.__file__).parent
# Lower rank may not import higher rank. The leaves every room may read: node.dimse.status, node.dimse.conformance.
RANK = {"settings": 0, "intake": 1, "dimse": 2, "work": 3, "web": 4, "service": 5, "cli": 6, "demo": 6}
LEAVES = {"node.dimse.status", "node.dimse.conformance"}


def _room(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "node" and parts[1] in RANK else None


def _imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for item in ast.walk(ast.parse(path.read_text())):
        if isinstance(item, ast.ImportFrom) and item.module and item.level == 0:
            found.append((item.lineno, item.module))
        elif isinstance(item, ast.Import):
            found.extend((item.lineno, alias.name) for alias in item.names)
    return found


def test_imports_run_one_way_between_the_rooms() -> None:
    wrong = []
    for path in sorted(ROOT.rglob("*.py")):
        relative = path.relative_to(ROOT.parent).with_suffix("")
        here = _room(".".join(relative.parts))
        if here is None:
            continue
        for line, module in _imports(path):
            there = _room(module)
            if there is None or module in LEAVES or there == here:
                continue
            if RANK[there] > RANK[here]:
                wrong.append(f"{path.relative_to(ROOT.parent)}:{line} ({here}) imports {module} ({there})")
    assert not wrong, "imports against the rule of node/__init__.py:\n" + "\n".join(wrong)


def test_the_libraries_do_not_import_the_service() -> None:
    wrong = []
    for package in ("storage", "quant", "stats", "phantom"):
        for path in sorted((ROOT.parent / package).rglob("*.py")):
            wrong += [f"{path.relative_to(ROOT.parent)}:{line} imports {module}"
                      for line, module in _imports(path) if module == "node" or module.startswith("node.")]
    assert not wrong, "\n".join(wrong)
