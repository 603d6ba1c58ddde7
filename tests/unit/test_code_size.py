"""Modules and functions stay small enough to read; a long one says why next to it.

A function over the limit carries a comment starting `# long:` on the line above its
definition (or its first decorator) that gives the reason.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

PACKAGES = (
    "edgefleet_common",
    "edgefleet_contract",
    "edgefleet_dataplane",
    "orchestrator",
    "node_agent",
)
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 70
REASON = "# long:"


def _modules() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (REPO / package).rglob("*.py"))


def _explained(lines: list[str], node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
    return first >= 2 and lines[first - 2].strip().startswith(REASON)


def long_functions(path: Path) -> list[str]:
    """`file:line name (N lines)` for each unexplained function over the limit."""
    text = path.read_text()
    lines = text.splitlines()
    found = []
    for node in ast.walk(ast.parse(text, str(path))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > MAX_FUNCTION_LINES and not _explained(lines, node):
                where = path.relative_to(REPO) if path.is_relative_to(REPO) else path.name
                found.append(f"{where}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_no_module_is_over_the_limit() -> None:
    long = [
        f"{p.relative_to(REPO)} ({n} lines)"
        for p in _modules()
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    ]
    assert long == []


def test_no_function_is_over_the_limit_without_a_reason() -> None:
    assert [f for p in _modules() for f in long_functions(p)] == []


def test_a_reason_comment_excuses_a_long_function(tmp_path: Path) -> None:
    body = "".join(f"    x = {i}\n" for i in range(MAX_FUNCTION_LINES))
    plain = tmp_path / "plain.py"
    plain.write_text(f"def f():\n{body}")
    explained = tmp_path / "explained.py"
    explained.write_text(f"# long: one table, read top to bottom\ndef f():\n{body}")
    assert long_functions(plain) == [f"plain.py:1 f ({MAX_FUNCTION_LINES + 1} lines)"]
    assert long_functions(explained) == []
