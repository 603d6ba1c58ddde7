"""edgectl with several controllers: it tries them in order, passes on after UNAVAILABLE,
and takes a refusal as final."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import grpc
import pytest

from edgefleet.v1 import controller_pb2
from orchestrator.cli.client import Controller, ControllerAddress, ControllerRefused, Transport
from orchestrator.errors import ControllerUnavailable
from tests.fakes.controller_api import FakeControllerApi


@pytest.fixture
def first() -> Iterator[FakeControllerApi]:
    with FakeControllerApi.serving() as fake:
        yield fake


@pytest.fixture
def second() -> Iterator[FakeControllerApi]:
    with FakeControllerApi.serving() as fake:
        yield fake


@pytest.fixture
def closed_address() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def at(*targets: str) -> list[ControllerAddress]:
    return [ControllerAddress(t, "from the test") for t in targets]


def list_nodes(controller: Controller) -> controller_pb2.ListNodesResponse:
    return controller.call(
        "ListNodes", controller_pb2.ListNodesRequest(), controller_pb2.ListNodesResponse
    )


def test_the_first_controller_that_answers_is_used(
    first: FakeControllerApi, second: FakeControllerApi, closed_address: str
) -> None:
    with Controller.connect_any(at(closed_address, first.address, second.address)) as client:
        assert client.address.target == first.address
        list_nodes(client)
    assert len(first.requests("ListNodes")) == 1
    assert second.requests("ListNodes") == []


def test_a_call_answered_unavailable_goes_to_the_next_controller(
    first: FakeControllerApi, second: FakeControllerApi
) -> None:
    first.refuse["ListNodes"] = (grpc.StatusCode.UNAVAILABLE, "the store is read-only")
    with Controller.connect_any(at(first.address, second.address)) as client:
        assert len(list_nodes(client).nodes) == 3
        assert client.address.target == second.address
    assert len(first.requests("ListNodes")) == 1
    assert len(second.requests("ListNodes")) == 1


def test_a_refusal_is_final(first: FakeControllerApi, second: FakeControllerApi) -> None:
    first.refuse["ListNodes"] = (grpc.StatusCode.PERMISSION_DENIED, "admins only: do X")
    with (
        Controller.connect_any(at(first.address, second.address)) as client,
        pytest.raises(ControllerRefused) as caught,
    ):
        list_nodes(client)
    assert str(caught.value) == "admins only: do X"
    assert caught.value.code == "PERMISSION_DENIED"
    assert second.requests("ListNodes") == []


def test_when_every_controller_is_read_only_the_last_answer_is_a_refusal(
    first: FakeControllerApi, second: FakeControllerApi
) -> None:
    for fake in (first, second):
        fake.refuse["ListNodes"] = (grpc.StatusCode.UNAVAILABLE, "quorum lost: read-only")
    with (
        Controller.connect_any(at(first.address, second.address)) as client,
        pytest.raises(ControllerRefused, match=r"^quorum lost: read-only$"),
    ):
        list_nodes(client)
    assert len(first.requests("ListNodes")) == 1
    assert len(second.requests("ListNodes")) == 1


def test_no_controller_answering_lists_each_tried(closed_address: str) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        other = f"127.0.0.1:{sock.getsockname()[1]}"
    transport = Transport(grpc.ssl_channel_credentials(), "alice.yaml")
    with pytest.raises(ControllerUnavailable) as caught:
        Controller.connect_any(at(closed_address, other), 2.0, transport=transport)
    message = str(caught.value)
    assert message.startswith("cannot reach any controller of alice.yaml (")
    assert message.index(closed_address) < message.index(other)


def test_a_tls_only_controller_reached_in_plaintext_gets_a_hint() -> None:
    address = ControllerAddress("127.0.0.1:7440", "from --controller")
    assert "--config FILE" in address.unreachable("ipv4:127.0.0.1:7440: Socket closed")
    assert "--config FILE" not in address.unreachable("Connection refused")
    assert "--config FILE" in ControllerAddress("10.0.0.5:7440", "x").unreachable()
