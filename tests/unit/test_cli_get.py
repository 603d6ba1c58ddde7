"""`edgectl get`, `status` and `describe` against the controller API test double."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from google.protobuf import json_format

from edgefleet.v1 import controller_pb2
from orchestrator.cli.main import main
from orchestrator.cli.output import age, size, styled
from tests.fakes.controller_api import (
    FakeControllerApi,
    ago,
    canned_agents,
    canned_models,
    canned_nodes,
)


@pytest.fixture
def api() -> Iterator[FakeControllerApi]:
    with FakeControllerApi.serving() as fake:
        yield fake


def edgectl(api: FakeControllerApi, *args: str) -> int:
    return main(["--controller", api.address, *args])


def rows(out: str) -> list[list[str]]:
    """A kubectl-style table as cells (columns are separated by 3 or more spaces)."""
    return [re.split(r"\s{3,}", line.strip()) for line in out.splitlines() if line.strip()]


def test_get_nodes_is_a_kubectl_like_table(
    api: FakeControllerApi, capsys: pytest.CaptureFixture[str]
) -> None:
    assert edgectl(api, "get", "nodes") == 0
    out = capsys.readouterr().out
    table = rows(out)
    assert table[0] == [
        "NAME",
        "STATE",
        "ADDRESS",
        "AGENTS",
        "MODELS",
        "MEMORY",
        "HEARTBEAT",
        "VERSION",
    ]
    assert table[1] == [
        "edge-1",
        "ready",
        "10.0.0.11:7441",
        "2/2",
        "1/1",
        "2.4GiB/16GiB",
        "1s",
        "0.1.0",
    ]
    assert table[2][:2] == ["edge-2", "ready"]
    assert table[3][:2] == ["edge-3", "not-ready"]
    assert table[3][6] == "5m"
    # Whole lines, no trailing padding, even when wider than a terminal.
    assert all(line == line.rstrip() for line in out.splitlines())


def test_get_nodes_wide_adds_labels_generation_and_discovery(
    api: FakeControllerApi, capsys: pytest.CaptureFixture[str]
) -> None:
    assert edgectl(api, "get", "node", "-o", "wide") == 0
    table = rows(capsys.readouterr().out)
    assert table[0][-3:] == ["LABELS", "GENERATION", "DISCOVERED"]
    assert table[1][-3:] == ["zone=front-desk", "3/3", "mdns"]
    assert table[2][-3:] == ["-", "2/3", "mdns"]  # edge-2 has not caught up yet


def test_get_agents_shows_ready_of_desired_and_replica_states(
    api: FakeControllerApi, capsys: pytest.CaptureFixture[str]
) -> None:
    assert edgectl(api, "get", "agents") == 0
    table = rows(capsys.readouterr().out)
    assert table[0] == ["NAME", "DEPLOYMENT", "MODEL", "READY", "NODES"]
    assert table[1] == ["customer-service", "distributed-edge", "phi-4-mini", "1/1", "edge-1"]
    assert table[3][3:] == ["0/1", "edge-2 (starting)"]


def test_get_agents_wide_shows_the_routers_view(
    api: FakeControllerApi, capsys: pytest.CaptureFixture[str]
) -> None:
    assert edgectl(api, "get", "agents", "-o", "wide") == 0
    table = rows(capsys.readouterr().out)
    assert table[0][5:] == ["IN-FLIGHT", "EWMA", "CIRCUIT", "TOOLS"]
    assert table[1][5:] == ["edge-1:2", "edge-1:180ms", "edge-1:closed", "database,calendar"]


def test_get_models_shows_load_progress(
    api: FakeControllerApi, capsys: pytest.CaptureFixture[str]
) -> None:
    assert edgectl(api, "get", "models") == 0
    assert rows(capsys.readouterr().out) == [
        ["ALIAS", "READY", "NODES", "MEMORY"],
        ["phi-4-mini", "1/1", "edge-1 (ready)", "2.4GiB"],
        ["qwen2.5-coder-0.5b", "0/1", "edge-2 (loading 45%)", "-"],
    ]


def _without_times(message: Any) -> Any:
    """Timestamps are made per call; everything else must survive the round trip."""
    for node in getattr(message, "nodes", []):
        node.ClearField("last_heartbeat")
        node.ClearField("state_since")
        for model in node.models:
            model.ClearField("last_used")
    return message


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("nodes", lambda: controller_pb2.ListNodesResponse(nodes=canned_nodes())),
        ("agents", lambda: controller_pb2.ListAgentsResponse(agents=canned_agents())),
        ("models", lambda: controller_pb2.ListModelsResponse(models=canned_models())),
    ],
)
def test_json_output_round_trips_to_the_same_messages(
    api: FakeControllerApi,
    capsys: pytest.CaptureFixture[str],
    kind: str,
    expected: Any,
) -> None:
    assert edgectl(api, "get", kind, "-o", "json") == 0
    wanted = expected()
    parsed = json_format.ParseDict(json.loads(capsys.readouterr().out), type(wanted)())
    assert _without_times(parsed) == _without_times(wanted)


def test_json_output_is_stable_for_scripts(
    api: FakeControllerApi, capsys: pytest.CaptureFixture[str]
) -> None:
    assert edgectl(api, "get", "nodes", "-o", "json") == 0
    node = json.loads(capsys.readouterr().out)["nodes"][2]
    # proto field names, enum names, and every field even when it holds its default
    assert node["id"] == "edge-3"
    assert node["state"] == "NODE_STATE_NOT_READY"
    assert node["discovered_by"] == "static"
    assert node["labels"] == {}
    assert node["generation"] == "0"


def test_yaml_output_parses(api: FakeControllerApi, capsys: pytest.CaptureFixture[str]) -> None:
    assert edgectl(api, "get", "models", "-o", "yaml") == 0
    document = yaml.safe_load(capsys.readouterr().out)
    parsed = json_format.ParseDict(document, controller_pb2.ListModelsResponse())
    assert [m.alias for m in parsed.models] == ["phi-4-mini", "qwen2.5-coder-0.5b"]


def test_get_rejects_unknown_kinds(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["get", "pods"])
    assert exit_info.value.code == 2


def test_status_is_one_screen(api: FakeControllerApi, capsys: pytest.CaptureFixture[str]) -> None:
    assert edgectl(api, "status") == 0
    out = capsys.readouterr().out
    assert out.startswith("controller ctl-test 0.1.0, gateway http://127.0.0.1:8080/v1\n")
    for title in ("Deployments", "Nodes (1 not-ready, 2 ready)", "Agents", "Models"):
        assert f"\n{title}\n" in out
    assert "not-ready (no heartbeat for 3s)" in out
    assert "technical-support (starting), documentation (pending)" in out
    assert (
        "! agent billing not placed [distributed-edge] (1 replica short): "
        "no ready node has 3.0GiB free" in out
    )
    assert "NodeNotReady" in out
    assert api.requests("GetStatus")[0].events == 10


def test_status_json_round_trips(
    api: FakeControllerApi, capsys: pytest.CaptureFixture[str]
) -> None:
    assert edgectl(api, "status", "-o", "json") == 0
    status = json_format.ParseDict(
        json.loads(capsys.readouterr().out), controller_pb2.ClusterStatus()
    )
    assert status.controller_id == "ctl-test"
    assert [n.id for n in status.nodes] == ["edge-1", "edge-2", "edge-3"]


def test_describe_node_shows_everything_and_its_events(
    api: FakeControllerApi, capsys: pytest.CaptureFixture[str]
) -> None:
    assert edgectl(api, "describe", "node", "edge-1") == 0
    out = capsys.readouterr().out
    for line in (
        "Name:           edge-1",
        "State:          ready for 10m",
        "Address:        10.0.0.11:7441",
        "Labels:         zone=front-desk",
        "Generation:     3 (node runs 3)",
        "Capacity:       4 CPUs, 16GiB memory (9GiB available), accelerators: -",
    ):
        assert line in out.splitlines()
    assert "\nModels:\n  ALIAS" in out
    assert "  customer-service   phi-4-mini   ready   2" in out
    assert "edge-1 joined (mdns) at 10.0.0.11:7441" in out
    (request,) = api.requests("WatchEvents")
    assert (request.object, request.follow) == ("node/edge-1", False)


def test_describe_agent_and_model(
    api: FakeControllerApi, capsys: pytest.CaptureFixture[str]
) -> None:
    assert edgectl(api, "describe", "agent", "technical-support") == 0
    assert edgectl(api, "describe", "model", "qwen2.5-coder-0.5b") == 0
    out = capsys.readouterr().out
    assert "Replicas:   0 ready of 1 desired" in out
    assert "  edge-2   starting   yes" in out
    assert "  edge-2   loading 45%" in out
    assert "ModelLoading" in out


def test_describe_an_unknown_name_lists_the_known_ones(
    api: FakeControllerApi, capsys: pytest.CaptureFixture[str]
) -> None:
    assert edgectl(api, "describe", "node", "edge-9") == 1
    assert capsys.readouterr().err == "error: no node named edge-9; known: edge-1, edge-2, edge-3\n"


def test_ages_and_sizes_read_like_kubectl() -> None:
    assert age(ago(5)) == "5s"
    assert age(ago(190)) == "3m"
    assert age(ago(3 * 3600 + 5)) == "3h"
    assert age(ago(5 * 86400)) == "5d"
    assert age(controller_pb2.Event().time) == "-"
    assert size(0) == "-"
    assert size(300 * 1024**2) == "300MiB"
    assert size(int(2.4 * 1024**3)) == "2.4GiB"
    assert size(16 * 1024**3) == "16GiB"


def test_a_state_with_its_reason_is_coloured_as_the_state() -> None:
    assert styled("failed").style
    assert styled("failed: out of memory").style == styled("failed").style
    assert styled("ready (edge-1)").style == styled("ready").style
