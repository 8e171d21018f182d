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


PACKAGES = ("node", "storage", "quant", "stats", "phantom")
SERVING = ("node.dimse", "node.intake", "node.work", "node.web", "node.service", "node.settings")


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT.parent / package).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def _graph() -> dict[str, set[str]]:
    """Module → the modules of ours it imports, at the top or inside a function alike."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        wanted = set()
        for _, module in _imports(path):
            wanted.add(module)
        for item in ast.walk(ast.parse(path.read_text())):  # `from package import module`
            if isinstance(item, ast.ImportFrom) and item.module and item.level == 0:
                wanted.update(f"{item.module}.{alias.name}" for alias in item.names)
        graph[name] = {w for w in wanted if w in modules and w != name}
    return graph


def test_no_module_imports_itself_back_through_others() -> None:
    """No import circle, not even through an import inside a function (Tarjan's strongly connected components)."""
    graph, index, low, stack, on_stack, circles = _graph(), {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while (w := stack.pop()) != v:
                on_stack.discard(w)
                component.append(w)
            on_stack.discard(v)
            if component:
                circles.append(sorted([v, *component]))

    for module in graph:
        if module not in index:
            visit(module)
    assert not circles, "import circles:\n" + "\n".join(" ⇄ ".join(c) for c in circles)


def test_the_serving_code_never_imports_the_phantom() -> None:
    """What a site runs measures with the atlas its settings name; only the commands that start a node (cli, demo)
    fill in the default phantom atlas."""
    wrong = [f"{module} imports {target}" for module, targets in _graph().items()
             if module.startswith(SERVING) for target in targets if target.startswith("phantom")]
    assert not wrong, "\n".join(wrong)


def test_no_two_modules_share_a_name_for_different_jobs() -> None:
    """One name per thing across the packages: ``atlas``, ``status``, ``metrics``, ``corrections``, ``run``, ``cohort``
    each once (a reader who meets the name knows which module it is)."""
    seen: dict[str, list[str]] = {}
    for module, path in _modules().items():
        if path.name in ("__init__.py", "__main__.py") or "migrations" in path.parts:
            continue
        seen.setdefault(path.stem, []).append(module)
    assert not {name: where for name, where in seen.items() if len(where) > 1}
