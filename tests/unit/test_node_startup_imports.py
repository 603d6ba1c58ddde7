"""An idle node loads only what every node needs: the rest comes with the path that uses it.

`edge-node run` imports the CLI, the daemon and the servicer before it serves; mDNS
(zeroconf) comes with advertising or joining over mDNS, aiohttp with the gateway, a
runtime or the model proxy, Agent Framework and the OpenAI client with the first
desired state that names an agent.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO

NODE_START = ("node_agent.cli", "node_agent.daemon", "node_agent.server")
"""What `edge-node run` imports before it serves."""


def loaded_after(modules: tuple[str, ...], packages: tuple[str, ...]) -> list[str]:
    """Those of `packages` loaded in a fresh interpreter once `modules` are imported."""
    probe = (
        f"import sys, {', '.join(modules)}; "
        f"print(' '.join(sorted({{m.split('.')[0] for m in sys.modules}} & {set(packages)!r})))"
    )
    found = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True
    )
    return found.stdout.split()


@pytest.mark.parametrize("package", ["zeroconf", "aiohttp", "agent_framework", "openai"])
def test_starting_a_node_does_not_load(package: str) -> None:
    assert loaded_after(NODE_START, (package,)) == []


@pytest.mark.parametrize(
    ("module", "package"),
    [
        ("node_agent.model_proxy", "aiohttp"),
        ("node_agent.gateway_host", "aiohttp"),
        ("edgefleet_contract.node_advert", "zeroconf"),
        ("edgefleet_contract.join_advert", "zeroconf"),
    ],
)
def test_the_paths_that_need_it_still_load(module: str, package: str) -> None:
    # The probe itself can see a package load: an empty answer above means absent.
    assert loaded_after((module,), (package,)) == [package]


@pytest.mark.parametrize(("agents", "loaded"), [(False, []), (True, ["agent_framework"])])
def test_a_state_that_names_an_agent_loads_agent_framework(agents: bool, loaded: list[str]) -> None:
    # Loaded with the state, not the first request: that request's deadline is for the model.
    want = "agents=(AgentWant(name='a', model='m'),)" if agents else ""
    probe = (
        "import asyncio, sys; "
        "from edgefleet_contract.desired import AgentWant, ModelWant, NodeDesired; "
        "from node_agent.daemon import load_agent_runner; "
        f"state = NodeDesired(generation=1, models=(ModelWant(alias='m'),), {want}); "
        "asyncio.run(load_agent_runner(state)); "
        "print(' '.join(m for m in ('agent_framework',) if m in sys.modules))"
    )
    found = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert found.stdout.split() == loaded
