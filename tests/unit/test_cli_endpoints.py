"""`edgectl get endpoints` and the routing line of `edgectl status`, against the controller
API test double."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest
import yaml
from google.protobuf import json_format

from edgefleet.v1 import controller_pb2
from orchestrator.cli.main import main
from tests.fakes.controller_api import FakeControllerApi


@pytest.fixture
def api() -> Iterator[FakeControllerApi]:
    with FakeControllerApi.serving() as fake:
        yield fake


def edgectl(api: FakeControllerApi, *args: str) -> int:
    return main(["--controller", api.address, *args])


def rows(out: str) -> list[list[str]]:
    """A kubectl-style table as cells (columns are separated by 3 or more spaces)."""
    return [re.split(r"\s{3,}", line.strip()) for line in out.splitlines() if line.strip()]


def test_get_endpoints_lists_every_gateway_with_its_routes(
    api: FakeControllerApi, capsys: pytest.CaptureFixture[str]
) -> None:
    assert edgectl(api, "get", "endpoints") == 0
    assert rows(capsys.readouterr().out) == [
        ["NAME", "KIND", "URL", "STATE", "ROUTES"],
        ["controller", "controller", "http://127.0.0.1:8080/v1", "ready", "current"],
        ["edge-1", "node", "https://10.0.0.11:7480/v1", "ready", "current"],
        ["edge-2", "node", "https://10.0.0.12:7480/v1", "ready", "behind (5)"],
        ["edge-3", "node", "https://10.0.0.13:7480/v1", "not-ready", "unknown"],
    ]
    assert len(api.requests("ListEndpoints")) == 1


def test_get_endpoints_wide_adds_address_generation_and_source(
    api: FakeControllerApi, capsys: pytest.CaptureFixture[str]
) -> None:
    assert edgectl(api, "get", "ep", "-o", "wide") == 0
    table = rows(capsys.readouterr().out)
    assert table[0][-3:] == ["ADDRESS", "GENERATION", "SOURCE"]
    assert table[1][-3:] == ["-", "7/7", "controller"]
    assert table[3][-3:] == ["10.0.0.12:7441", "5/7", "node-info"]
    assert table[4][-3:] == ["10.0.0.13:7441", "-/7", "mdns"]


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_get_endpoints_documents_round_trip(
    api: FakeControllerApi, capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    assert edgectl(api, "get", "endpoint", "-o", fmt) == 0
    out = capsys.readouterr().out
    document = json.loads(out) if fmt == "json" else yaml.safe_load(out)
    reply = json_format.ParseDict(document, controller_pb2.ListEndpointsResponse())
    assert reply.routes_generation == 7
    assert [e.name for e in reply.endpoints] == ["controller", "edge-1", "edge-2", "edge-3"]
    assert not reply.endpoints[3].routes_reported


def test_status_says_how_many_nodes_route_with_the_current_table(
    api: FakeControllerApi, capsys: pytest.CaptureFixture[str]
) -> None:
    assert edgectl(api, "status") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == "routing table 7: 1/3 nodes route with it"
