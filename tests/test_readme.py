"""README tells the truth about the tree: every path it names in the repository exists, and every
``path::name`` it points to is defined there."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOP = ("node/", "storage/", "quant/", "stats/", "phantom/", "deploy/", "bench/", "tests/", ".ci/")


def _named_paths() -> list[str]:
    spans = re.findall(r"`([^`\s]+)`", (ROOT / "README.md").read_text())
    return sorted({span for span in spans if span.startswith(TOP) and "<" not in span and "*" not in span})


def _defined(path: Path, dotted: str) -> bool:
    names = {node.name for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)}
    return all(part in names for part in dotted.split("."))


def test_every_path_readme_names_exists_with_the_function_it_points_to() -> None:
    wrong = []
    for span in _named_paths():
        path, _, symbol = span.partition("::")
        target = ROOT / path.split(" ")[0]
        if not target.exists():
            wrong.append(f"{span}: no such file or folder")
        elif symbol and not _defined(target, symbol.removesuffix("()")):
            wrong.append(f"{span}: {path} defines no {symbol}")
    assert len(_named_paths()) > 20  # the check reads README at all
    assert not wrong, "README names what is not there:\n" + "\n".join(wrong)
