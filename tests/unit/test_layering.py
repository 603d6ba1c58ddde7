"""The layers stay apart: read from the import graph, not from good intentions.

edgefleet_common      plumbing (gRPC, TLS, logs, ports) — imports no other layer
edgefleet_contract    what controller and node agree on — imports only plumbing
edgefleet_dataplane   gateway and router — contract and plumbing only
orchestrator          the controller and edgectl — never the node
node_agent            the node daemon — never the controller
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGES = (
    "edgefleet_common",
    "edgefleet_contract",
    "edgefleet_dataplane",
    "orchestrator",
    "node_agent",
)
MAY_IMPORT: dict[str, frozenset[str]] = {
    "edgefleet_common": frozenset(),
    "edgefleet_contract": frozenset({"edgefleet_common"}),
    "edgefleet_dataplane": frozenset({"edgefleet_common", "edgefleet_contract"}),
    "orchestrator": frozenset({"edgefleet_common", "edgefleet_contract", "edgefleet_dataplane"}),
    "node_agent": frozenset({"edgefleet_common", "edgefleet_contract", "edgefleet_dataplane"}),
}


def imported_packages(path: Path) -> set[str]:
    """The top-level project packages a module imports (at any depth of the file)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found & set(PACKAGES)


def import_graph() -> dict[str, dict[str, set[str]]]:
    """package → module path → the other project packages it imports."""
    graph: dict[str, dict[str, set[str]]] = {}
    for package in PACKAGES:
        modules = sorted((REPO / package).rglob("*.py"))
        graph[package] = {
            str(m.relative_to(REPO)): imported_packages(m) - {package} for m in modules
        }
    return graph


def test_every_package_imports_only_the_layers_below_it() -> None:
    wrong = [
        f"{module} imports {', '.join(sorted(other - MAY_IMPORT[package]))}"
        for package, modules in import_graph().items()
        for module, other in modules.items()
        if other - MAY_IMPORT[package]
    ]
    assert wrong == []


def test_the_graph_reader_sees_imports_inside_functions(tmp_path: Path) -> None:
    module = tmp_path / "sample.py"
    module.write_text("import os\n\ndef late():\n    from node_agent.cli import main\n")
    assert imported_packages(module) == {"node_agent"}


@pytest.mark.parametrize(
    "module", ["orchestrator.controller", "orchestrator.cli.main", "edgefleet_dataplane.gateway"]
)
def test_the_controller_side_does_not_load_the_agent_framework(module: str) -> None:
    probe = (
        f"import sys, {module}; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('agent_framework', 'agent_framework_openai', 'node_agent')))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert loaded.stdout.strip() == "[]"
