"""The controller with real edge-node processes on loopback, driven by `edgectl`.

Every node runs the real llama.cpp server with the SmolLM2-135M GGUF; the node
catalogs map the seed manifests' aliases (`phi-4-mini`, `qwen2.5-coder-0.5b`,
`qwen2.5-0.5b`) to it. The controller is its own process, found by `edgectl`
through `--controller`, and killed for real where the test says so.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from edgefleet_common.ports import free_port
from tests.conftest import MANIFESTS
from tests.integration.controller_process import (
    ControllerProcess,
    describe,
    smollm2_catalog,
    start_controller,
)
from tests.integration.node_process import (
    RUNTIME_MARK,
    NodeProcess,
    environment,
    start_node,
    unique_id,
    wait_gone,
)
from tests.integration.test_node_daemon import require_model
from tests.netlab import Proc
from tests.polling import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.model]

SEED_ALIASES = ("phi-4-mini", "qwen2.5-coder-0.5b", "qwen2.5-0.5b")
SEED_AGENTS = {
    "customer-service": "edge-1",
    "scheduling": "edge-1",
    "technical-support": "edge-2",
    "documentation": "edge-2",
}
READY = "AGENT_STATE_READY"
SEED_DISTRIBUTED = MANIFESTS / "distributed-edge.yaml"
"""The project's copy of the distributed seed shape (compared with the seed in the unit tests)."""


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    require_model()
    return smollm2_catalog(tmp_path / "catalog.yaml", SEED_ALIASES)


@contextlib.contextmanager
def two_nodes(
    tmp_path: Path, catalog: Path, *, ids: tuple[str, str] = ("edge-1", "edge-2"), **options: Any
) -> Iterator[dict[str, NodeProcess]]:
    """Two edge-node processes with the SmolLM2 catalog."""
    nodes: dict[str, NodeProcess] = {}
    try:
        for node_id in ids:
            nodes[node_id] = start_node(
                node_id, tmp_path / f"node-{node_id}", catalog=catalog, **options
            )
        yield nodes
    finally:
        for node in nodes.values():
            node.close()


@contextlib.contextmanager
def controller(tmp_path: Path, **options: Any) -> Iterator[ControllerProcess]:
    running = start_controller(tmp_path / "controller", **options)
    try:
        yield running
    finally:
        running.close()


def agents_by_name(ctl: ControllerProcess) -> dict[str, dict[str, Any]]:
    """`edgectl get agents -o json`, keyed by agent name."""
    return {a["name"]: a for a in ctl.json("get", "agents")["agents"]}


def ready_placement(ctl: ControllerProcess) -> dict[str, list[str]]:
    """Agent name → the nodes where a replica is ready."""
    return {
        name: sorted(r["node_id"] for r in agent["replicas"] if r["state"] == READY)
        for name, agent in agents_by_name(ctl).items()
    }


def server_pids(nodes: dict[str, NodeProcess]) -> dict[str, set[int]]:
    """The llama.cpp server processes of every node."""
    return {node_id: {p.pid for p in node.runtime_servers()} for node_id, node in nodes.items()}


def edited_seed(tmp_path: Path, name: str, edit: Callable[[str], str]) -> Path:
    """A copy of the distributed-edge seed with `edit` applied to its text, in its own folder
    under the seed's file name (a deployment without `name:` is named after its file)."""
    text = SEED_DISTRIBUTED.read_text()
    changed = edit(text)
    assert changed != text, "the edit changed nothing"
    path = tmp_path / name / SEED_DISTRIBUTED.name
    path.parent.mkdir()
    path.write_text(changed)
    return path


# -- the seed's distributed shape, nodes at static addresses ---------------------------------


@pytest.mark.timeout(240)
def test_static_nodes_run_the_distributed_seed_and_only_changes_are_acted_on(
    tmp_path: Path, catalog: Path
) -> None:
    with (
        two_nodes(tmp_path, catalog) as nodes,
        controller(tmp_path, nodes={i: n.address for i, n in nodes.items()}) as ctl,
    ):
        applied = ctl.edgectl("apply", "-f", str(SEED_DISTRIBUTED), "--wait", "--timeout", "120")
        assert "edge-1" in applied.stdout, describe(applied)
        assert "edge-2" in applied.stdout, describe(applied)
        assert ready_placement(ctl) == {a: [n] for a, n in SEED_AGENTS.items()}

        node_rows = {n["id"]: n for n in ctl.json("get", "nodes")["nodes"]}
        assert {i: n["state"] for i, n in node_rows.items()} == {
            "edge-1": "NODE_STATE_READY",
            "edge-2": "NODE_STATE_READY",
        }
        assert {n["discovered_by"] for n in node_rows.values()} == {"static"}
        status = ctl.edgectl("status")
        assert re.search(r"edge-1\s+ready", status.stdout), describe(status)
        assert re.search(r"customer-service\s.*1/1", status.stdout), describe(status)

        reply = ctl.edgectl("chat", "customer-service", "hi", "--max-tokens", "16", timeout=120)
        assert reply.stdout.strip(), f"an empty reply from the model\n{describe(reply)}"
        assert "edge-1" in reply.stderr, f"the serving node is named\n{describe(reply)}"

        # Move `documentation` to edge-1 and remove `scheduling`: diff shows exactly that,
        # and applying it leaves every model server running (nothing else restarts).
        before = server_pids(nodes)
        moved = edited_seed(
            tmp_path,
            "moved",
            lambda t: t.replace(
                '["customer-service", "scheduling"]', '["customer-service", "documentation"]'
            ).replace('["technical-support", "documentation"]', '["technical-support"]'),
        )
        diff = ctl.edgectl("diff", "-f", str(moved), check=False)
        assert diff.returncode == 1, describe(diff)
        steps = [line for line in diff.stdout.splitlines() if re.search(r"\b(start|stop)\b", line)]
        assert any("documentation" in s and "edge-1" in s for s in steps), describe(diff)
        assert any("scheduling" in s for s in steps), describe(diff)
        assert not any("customer-service" in s or "technical-support" in s for s in steps), (
            describe(diff)
        )
        assert not re.search(r"\b(load|unload)\b.*\b(phi-4-mini|qwen2\.5-coder-0\.5b)", diff.stdout)

        ctl.edgectl("apply", "-f", str(moved), "--wait", "--timeout", "60")
        assert ready_placement(ctl) == {
            "customer-service": ["edge-1"],
            "documentation": ["edge-1"],
            "technical-support": ["edge-2"],
        }
        assert server_pids(nodes) == before, "a model server restarted for an agent change"
        same = ctl.edgectl("diff", "-f", str(moved), check=False)
        assert same.returncode == 0, describe(same)

        # Rollback: the first revision again, as a new revision.
        ctl.edgectl("rollback")
        wait_for(
            "the rollback is ready",
            lambda: ready_placement(ctl) == {a: [n] for a, n in SEED_AGENTS.items()},
            60,
            lambda: ctl.edgectl("status").stdout,
        )
        revisions = ctl.json("rollback", "--list")["revisions"]
        assert [r["number"] for r in revisions] == [3, 2, 1]
        assert revisions[0]["digest"] == revisions[2]["digest"]
        assert server_pids(nodes) == before


# -- discovery over mDNS (bound to loopback) ------------------------------------------------


@pytest.mark.timeout(180)
def test_nodes_found_over_mdns_get_their_work(tmp_path: Path, catalog: Path) -> None:
    # Ids unique to this run: every process on this machine shares loopback mDNS.
    ids = (unique_id("edge-1"), unique_id("edge-2"))
    manifest = edited_seed(
        tmp_path,
        "mdns",
        lambda t: t.replace('"edge-1"', f'"{ids[0]}"').replace('"edge-2"', f'"{ids[1]}"'),
    )
    with (
        two_nodes(tmp_path, catalog, ids=ids, mdns_interfaces=["127.0.0.1"]) as nodes,
        controller(tmp_path, mdns_interfaces=["127.0.0.1"]) as ctl,
    ):
        wait_for(
            "both nodes discovered",
            lambda: (
                {n["id"]: n["discovered_by"] for n in ctl.json("get", "nodes")["nodes"]}.items()
                >= {(ids[0], "mdns"), (ids[1], "mdns")}
            ),
            30,
            ctl.log,
        )
        ctl.edgectl("apply", "-f", str(manifest), "--wait", "--timeout", "120")
        placement = ready_placement(ctl)
        assert placement["customer-service"] == [ids[0]]
        assert placement["documentation"] == [ids[1]]
        addresses = {n["id"]: n["address"] for n in ctl.json("get", "nodes")["nodes"]}
        assert addresses[ids[0]].endswith(f":{nodes[ids[0]].port}")


# -- a controller killed in the middle of an apply ------------------------------------------


@pytest.mark.timeout(240)
def test_a_controller_killed_mid_apply_restarts_consistent_and_costs_the_nodes_nothing(
    tmp_path: Path, catalog: Path
) -> None:
    with two_nodes(tmp_path, catalog) as nodes:
        static = {i: n.address for i, n in nodes.items()}
        ctl = start_controller(tmp_path / "controller", nodes=static)
        try:
            ctl.edgectl("apply", "-f", str(SEED_DISTRIBUTED), "--wait", "--timeout", "120")
            before = server_pids(nodes)
            generations = {n["id"]: n["generation"] for n in ctl.json("get", "nodes")["nodes"]}

            # A second revision (an agent added on edge-2); the controller dies right
            # after storing it, while the nodes are being told.
            grown = edited_seed(
                tmp_path,
                "grown",
                lambda t: t.replace(
                    '["technical-support", "documentation"]',
                    '["technical-support", "documentation", "billing"]',
                ),
            )
            ctl.edgectl("apply", "-f", str(grown))
            ctl.kill()

            ctl = start_controller(
                tmp_path / "controller", nodes=static, port=int(ctl.address.rpartition(":")[2])
            )
            wait_for(
                "every agent ready after the restart",
                lambda: (
                    ready_placement(ctl)
                    == {
                        "customer-service": ["edge-1"],
                        "scheduling": ["edge-1"],
                        "billing": ["edge-2"],
                        "technical-support": ["edge-2"],
                        "documentation": ["edge-2"],
                    }
                ),
                60,
                lambda: ctl.edgectl("status").stdout + ctl.log(),
            )
            revisions = ctl.json("rollback", "--list")["revisions"]
            assert [r["number"] for r in revisions] == [2, 1]
            agents = agents_by_name(ctl)
            assert all(len(a["replicas"]) == a["desired_replicas"] for a in agents.values()), agents
            assert server_pids(nodes) == before, "a model server restarted"
            after = {n["id"]: n["generation"] for n in ctl.json("get", "nodes")["nodes"]}
            assert after["edge-1"] >= generations["edge-1"]
            assert after["edge-2"] > generations["edge-2"]
            # A clean restart with nothing new costs nothing: no new generation at all.
            ctl.terminate()
            ctl = start_controller(tmp_path / "controller", nodes=static)
            wait_for(
                "the nodes reconnect",
                lambda: all(
                    n["state"] == "NODE_STATE_READY" for n in ctl.json("get", "nodes")["nodes"]
                ),
                30,
                ctl.log,
            )
            time.sleep(1.0)
            assert {n["id"]: n["generation"] for n in ctl.json("get", "nodes")["nodes"]} == after
            assert server_pids(nodes) == before
        finally:
            ctl.close()


# -- `edgectl up` with the seed's single-device shape ---------------------------------------


@pytest.mark.timeout(180)
def test_up_runs_the_single_device_seed_until_interrupted(tmp_path: Path, catalog: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    argv = [
        sys.executable, "-m", "orchestrator.cli.main", "up",
        "-f", str(MANIFESTS / "single-device.yaml"),
        "--catalog", str(catalog),
        "--data-dir", str(tmp_path / "up"),
        "--listen", address,
        "--gateway-listen", "off",
        "--no-mdns",
        "--timeout", "120",
    ]  # fmt: skip
    up = Proc(
        argv,
        label="edgectl up",
        env=environment({"COLUMNS": "200", "NO_COLOR": "1"}),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        up.expect(r"serving; press Ctrl-C to stop", 150)
        lines = "\n".join(up.lines)
        assert "primary-agent>" in lines, up.tail()
        assert f"edgectl --controller {address} chat primary-agent" in lines, up.tail()
        ctl = ControllerProcess(tmp_path, argv, address, up)
        assert ready_placement(ctl) == {"primary-agent": ["local"]}
        models = {m["alias"]: m for m in ctl.json("get", "models")["models"]}
        assert models["phi-4-mini"]["ready_replicas"] == 1
        children = psutil.Process(up.pid).children(recursive=True)
        assert any(RUNTIME_MARK in " ".join(c.cmdline()) for c in children), "no model server"
        up.send_signal(signal.SIGINT)
        assert up.wait(30) == 0, up.tail()
        alive = wait_gone(children, 15)
        assert not alive, f"processes outlived `edgectl up`: {alive}"
    finally:
        if up.poll() is None:
            up.kill_group()
        up.reap()


# -- `edgectl apply --watch` against a real controller ----------------------------------------


@pytest.mark.timeout(120)
def test_apply_watch_applies_edits_refuses_broken_ones_and_prunes_removed_files(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "manifests"
    folder.mkdir()
    manifest = folder / "quickstart.yaml"
    manifest.write_text((MANIFESTS / "quickstart.yaml").read_text())
    ctl = start_controller(tmp_path / "controller")
    watcher = Proc(
        [
            sys.executable,
            "-m",
            "orchestrator.cli.main",
            "--controller",
            ctl.address,
            "apply",
            "--watch",
            str(folder),
        ],
        label="edgectl apply --watch",
        env=environment({"COLUMNS": "200", "NO_COLOR": "1"}),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )

    def revisions() -> list[int]:
        done = ctl.edgectl("rollback", "quickstart", "--list", "-o", "json", check=False)
        if done.returncode != 0:
            return []
        return [r["number"] for r in json.loads(done.stdout)["revisions"]]

    try:
        watcher.expect(r"watching .* for changes", 30)
        wait_for("the first apply", lambda: revisions() == [1], 15, watcher.tail)

        manifest.write_text(manifest.read_text().replace("concise, friendly", "brief, kind"))
        wait_for("the edit applied", lambda: revisions() == [2, 1], 15, watcher.tail)

        manifest.write_text(manifest.read_text().replace("type: single-device", "type: single"))
        watcher.expect(r"quickstart\.yaml:\d+:\d+: error: .*type", 15)
        time.sleep(1.0)
        assert revisions() == [2, 1], "a broken edit changed something"
        manifest.unlink()

        def deployments() -> list[str]:
            return [d["name"] for d in ctl.json("status")["deployments"]]

        wait_for("the deployment deleted", lambda: deployments() == [], 15, watcher.tail)
        assert revisions() == [2, 1], "the history of a deleted deployment is kept"
    finally:
        watcher.send_signal(signal.SIGINT)
        try:
            assert watcher.wait(15) == 0, watcher.tail()
        finally:
            if watcher.poll() is None:
                watcher.kill_group()
            watcher.reap()
            ctl.close()
