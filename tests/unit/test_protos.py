"""The gRPC contracts: generated code is current, and the protos keep their rules."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from types import ModuleType

import pytest
from google.protobuf.descriptor import EnumDescriptor, FileDescriptor

from edgefleet.v1 import common_pb2, controller_pb2, node_pb2
from tests.conftest import REPO

FILES: list[FileDescriptor] = [
    common_pb2.DESCRIPTOR,
    node_pb2.DESCRIPTOR,
    controller_pb2.DESCRIPTOR,
]


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_protos", REPO / "scripts" / "gen_protos.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_checked_in_generated_code_matches_a_fresh_generation() -> None:
    stale = _generator().stale_files()
    assert stale == [], f"stale generated code: {stale}; run python scripts/gen_protos.py"


def _enums(file: FileDescriptor) -> Iterator[EnumDescriptor]:
    yield from file.enum_types_by_name.values()
    pending = list(file.message_types_by_name.values())
    while pending:
        message = pending.pop()
        yield from message.enum_types
        pending.extend(message.nested_types)


@pytest.mark.parametrize("file", FILES, ids=lambda f: f.name)
def test_every_enum_starts_with_unspecified_zero(file: FileDescriptor) -> None:
    for enum in _enums(file):
        zero = enum.values_by_number[0].name
        assert zero.endswith("_UNSPECIFIED"), f"{enum.full_name}: value 0 is {zero}"


@pytest.mark.parametrize("file", FILES, ids=lambda f: f.name)
def test_contracts_are_versioned_by_package(file: FileDescriptor) -> None:
    assert file.package == "edgefleet.v1"
    assert file.name.startswith("edgefleet/v1/")


def _words(enum: EnumDescriptor, prefix: str) -> list[str]:
    return [
        v.name.removeprefix(prefix).lower().replace("_", "-") for v in enum.values if v.number != 0
    ]


def test_state_enums_use_the_design_vocabulary() -> None:
    common = common_pb2.DESCRIPTOR.enum_types_by_name
    assert _words(common["ModelState"], "MODEL_STATE_") == [
        "pending",
        "loading",
        "ready",
        "unloading",
        "failed",
    ]
    assert _words(common["AgentState"], "AGENT_STATE_") == [
        "pending",
        "starting",
        "ready",
        "stopping",
        "failed",
        "superseded",
    ]
    assert _words(common["NodeState"], "NODE_STATE_") == [
        "ready",
        "suspect",
        "not-ready",
        "untrusted",
        "draining",
    ]


def test_services_offer_the_documented_rpcs() -> None:
    node = node_pb2.DESCRIPTOR.services_by_name["NodeService"]
    assert set(node.methods_by_name) == {
        "GetInfo",
        "ApplyRoutes",
        "ApplyState",
        "WatchStatus",
        "InvokeAgent",
        "InvokeAgentUnary",
        "ProxyModel",
        "LoadModel",
        "UnloadModel",
        "FetchBlob",
    }
    assert node.methods_by_name["WatchStatus"].server_streaming
    assert node.methods_by_name["InvokeAgent"].server_streaming
    assert node.methods_by_name["FetchBlob"].server_streaming
    controller = controller_pb2.DESCRIPTOR.services_by_name["ControllerService"]
    assert {
        "Apply",
        "Diff",
        "Delete",
        "Rollback",
        "ListRevisions",
        "GetStatus",
        "ListNodes",
        "ListAgents",
        "ListModels",
        "WatchEvents",
        "Chat",
    } <= set(controller.methods_by_name)
