"""What a node needs to fetch a model's blob (pin, size, peers, token, disk and rate limits)
on the wire, and what it does to a state's content key."""

from __future__ import annotations

import pytest

from edgefleet.v1 import common_pb2, node_pb2
from edgefleet_contract.desired import (
    BlobPeer,
    ModelWant,
    NodeDesired,
    NodeLimits,
    check_address,
    compare,
)
from edgefleet_contract.errors import InvalidMessage
from edgefleet_contract.wire import desired_from_proto, desired_to_proto

PIN = "a" * 64
PEERS = (
    BlobPeer(node_id="kiosk-2", address="10.0.0.12:7443", complete=True),
    BlobPeer(node_id="kiosk-3", address="[fd00::3]:7443"),
)
STATE = NodeDesired(
    generation=3,
    controller_id="ctrl-1",
    models=(
        ModelWant(
            alias="phi",
            runtime="llama.cpp",
            source="hf://org/repo/phi.gguf@main",
            sha256=PIN,
            size_bytes=2_400_000_000,
            peers=PEERS,
            token_env="HF_TOKEN",
        ),
    ),
    limits=NodeLimits(max_disk_bytes=8 * 2**30, max_download_rate_bps=2 * 2**20),
)


def test_pins_peers_and_limits_survive_the_wire() -> None:
    sent = desired_to_proto(STATE).SerializeToString()
    request = node_pb2.ApplyStateRequest.FromString(sent)
    spec = request.state.models[0]
    assert (spec.sha256, spec.size_bytes, spec.token_env) == (PIN, 2_400_000_000, "HF_TOKEN")
    assert [(p.node_id, p.address, p.complete) for p in spec.peers] == [
        ("kiosk-2", "10.0.0.12:7443", True),
        ("kiosk-3", "[fd00::3]:7443", False),
    ]
    limits = request.state.limits
    assert (limits.max_disk_bytes, limits.max_download_rate_bps) == (8 * 2**30, 2 * 2**20)
    assert desired_from_proto(request) == STATE


def test_an_older_sender_means_unknown_pin_no_peers_and_no_limits() -> None:
    request = node_pb2.ApplyStateRequest(
        generation=1, state=node_pb2.NodeDesiredState(models=[common_pb2.ModelSpec(alias="m")])
    )
    received = desired_from_proto(request)
    model = received.models[0]
    assert (model.sha256, model.size_bytes, model.peers, model.token_env) == ("", 0, (), "")
    assert (received.limits.max_disk_bytes, received.limits.max_download_rate_bps) == (0, 0)


def test_peers_change_neither_the_content_key_nor_the_item() -> None:
    alone = STATE.model_copy(update={"models": (STATE.models[0].model_copy(update={"peers": ()}),)})
    assert alone.content_key() == STATE.content_key()
    assert "kiosk-2" not in STATE.content_key()
    assert [c.action for c in compare(alone, STATE)] == ["unchanged"]
    assert STATE.models[0].same_model(alone.models[0])


@pytest.mark.parametrize(
    "update", [{"sha256": "b" * 64}, {"size_bytes": 1}, {"token_env": "OTHER_TOKEN"}]
)
def test_a_pin_size_or_token_is_part_of_the_content(update: dict[str, object]) -> None:
    other = STATE.model_copy(update={"models": (STATE.models[0].model_copy(update=update),)})
    assert other.content_key() != STATE.content_key()
    assert [c.action for c in compare(STATE, other)] == ["updated"]


def test_limits_are_part_of_the_content() -> None:
    other = STATE.model_copy(update={"limits": NodeLimits(max_disk_bytes=1)})
    assert other.content_key() != STATE.content_key()


def state_with(
    spec: common_pb2.ModelSpec | None = None, limits: common_pb2.ResourceLimits | None = None
) -> node_pb2.ApplyStateRequest:
    return node_pb2.ApplyStateRequest(
        generation=1,
        state=node_pb2.NodeDesiredState(models=[spec] if spec else [], limits=limits),
    )


def peer(node_id: str = "n2", address: str = "10.0.0.2:7443") -> common_pb2.BlobPeer:
    return common_pb2.BlobPeer(node_id=node_id, address=address)


@pytest.mark.parametrize(
    ("request_", "words"),
    [
        (
            state_with(common_pb2.ModelSpec(alias="m", sha256="abc")),
            "models[0].sha256: `abc` is not a SHA-256 digest; write its 64 lowercase hex",
        ),
        (
            state_with(common_pb2.ModelSpec(alias="m", sha256="A" * 64)),
            "models[0].sha256: SHA-256 `" + "A" * 64 + "` has uppercase digits",
        ),
        (
            state_with(common_pb2.ModelSpec(alias="m", sha256="g" * 64)),
            "is not a SHA-256 digest",
        ),
        (
            state_with(common_pb2.ModelSpec(alias="m", peers=[peer(address="10.0.0.2")])),
            "models[0].peers[0].address: `10.0.0.2` is not an address; write HOST:PORT",
        ),
        (
            state_with(common_pb2.ModelSpec(alias="m", peers=[peer(address="host:0")])),
            "models[0].peers[0].address: `host:0` is not an address",
        ),
        (
            state_with(common_pb2.ModelSpec(alias="m", peers=[peer(address="fd00::3:7443")])),
            "`fd00::3:7443` is not an address",
        ),
        (
            state_with(common_pb2.ModelSpec(alias="m", peers=[peer(address="")])),
            "models[0].peers[0].address: String should have at least 1 character",
        ),
        (
            state_with(common_pb2.ModelSpec(alias="m", peers=[peer(), peer(node_id="N_2")])),
            "models[0].peers[1].node_id: node id `N_2` is not a DNS label",
        ),
        (
            state_with(common_pb2.ModelSpec(alias="m", peers=[peer(node_id="")])),
            "models[0].peers[0].node_id: String should have at least 1 character",
        ),
        (
            state_with(common_pb2.ModelSpec(alias="m", token_env="HF TOKEN")),
            "models[0].token_env: String should match pattern",
        ),
    ],
)
def test_bad_pins_peers_and_tokens_are_invalid_requests(
    request_: node_pb2.ApplyStateRequest, words: str
) -> None:
    with pytest.raises(InvalidMessage) as error:
        desired_from_proto(request_)
    assert words in str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    "address", ["10.0.0.2:7443", "kiosk-2.lan:1", "[fd00::3]:65535", "localhost:7443"]
)
def test_addresses_are_host_and_port(address: str) -> None:
    assert check_address(address) == address


@pytest.mark.parametrize(
    "address",
    [
        "",
        ":7443",
        "host:",
        "host:65536",
        "host:-1",
        "host:\uff17",
        "a b:1",
        "[]:1",
        "u@h:1",
        "h/x:1",
    ],
)
def test_anything_else_is_not_an_address(address: str) -> None:
    with pytest.raises(ValueError, match="write HOST:PORT"):
        check_address(address)


def test_a_hash_learned_since_keeps_the_model_a_different_one_does_not() -> None:
    model = STATE.models[0].model_copy(update={"sha256": "", "size_bytes": 0})
    learned = model.model_copy(update={"sha256": "c" * 64, "size_bytes": 1234})
    assert model.same_model(learned)
    assert learned.same_model(model)
    assert not learned.same_model(learned.model_copy(update={"sha256": "d" * 64}))
    assert not learned.same_model(learned.model_copy(update={"size_bytes": 99}))
    assert not model.same_model(model.model_copy(update={"source": "hf://o/r/other.gguf"}))
