"""Where the state lives in etcd: keys of one cluster stay apart, records round-trip."""

from __future__ import annotations

from types import MappingProxyType

import pytest

from orchestrator.store import (
    CertificateRow,
    DeploymentRow,
    EventRow,
    MemberRow,
    NodeAssignment,
    NodeMarkRow,
    NodeRow,
    Revision,
    StoreError,
)
from orchestrator.store import etcd_records as records
from orchestrator.store.credentials import CredentialRow
from orchestrator.store.etcd_keys import ClusterKeys, name_of


def test_every_key_lives_under_the_cluster_prefix() -> None:
    keys = ClusterKeys("factory-7")
    assert keys.prefix == b"/edgefleet/factory-7/"
    assert keys.leader == b"/edgefleet/factory-7/leader"
    assert keys.revision("chat", 12) == b"/edgefleet/factory-7/revisions/chat/0000000012"
    assert keys.event(5) == b"/edgefleet/factory-7/events/" + b"0" * 19 + b"5"
    assert keys.certificate(0xAB) == b"/edgefleet/factory-7/certificates/ab"
    assert keys.term == b"/edgefleet/factory-7/counters/term"
    assert keys.member("c/1") == b"/edgefleet/factory-7/members/c%2F1"
    assert ClusterKeys("a/b").prefix == b"/edgefleet/a%2Fb/"
    with pytest.raises(ValueError, match="empty"):
        ClusterKeys("")


def test_a_name_with_a_slash_cannot_reach_into_another_names_keys() -> None:
    keys = ClusterKeys("c")
    assert not keys.revision("a/b", 1).startswith(keys.revision("a"))
    assert name_of(keys.node("edge/1 x")) == "edge/1 x"
    assert keys.within(keys.node("n")) == b"nodes/n"
    with pytest.raises(ValueError, match="not under"):
        keys.within(b"/edgefleet/other/nodes/n")


def test_numbers_sort_as_keys_in_numeric_order() -> None:
    keys = ClusterKeys("c")
    assert sorted([keys.event(10), keys.event(9), keys.event(100)]) == [
        keys.event(9),
        keys.event(10),
        keys.event(100),
    ]
    assert keys.revision("chat", 2) < keys.revision("chat", 10)


@pytest.mark.parametrize(
    ("key", "area"),
    [
        (b"revisions/chat/0000000001", "revisions"),
        (b"deployments/chat", "revisions"),
        (b"assignment/edge-1", "assignment"),
        (b"counters/generation", "assignment"),
        (b"routes", "routes"),
        (b"nodes/edge-1", "nodes"),
        (b"marks/edge-1", "marks"),
        (b"events/00000000000000000001", "events"),
        (b"counters/events", "events"),
        (b"settings/cluster_ca", "settings"),
        (b"credentials/api-key/k1", "credentials"),
        (b"certificates/ab", "credentials"),
        (b"revoked/edge-1", "credentials"),
        (b"leader", None),
        (b"meta", None),
        (b"counters/term", None),
        (b"members/c-1", None),
    ],
)
def test_each_key_belongs_to_one_change_area(key: bytes, area: str | None) -> None:
    keys = ClusterKeys("c")
    assert keys.area(keys.prefix + key) == area
    assert keys.area(b"/edgefleet/other/" + key) is None


ROWS = [
    (records.revision, records.revision_of, Revision("chat", 3, 1.5, "f", "m", "{}", "d", "apply")),
    (records.deployment, records.deployment_of, DeploymentRow("chat", 3, True, 2.0)),
    (records.assignment, records.assignment_of, NodeAssignment("edge-1", 7, "{}", 3.0)),
    (
        records.node,
        records.node_of,
        NodeRow("edge-1", "h:1", "mdns", MappingProxyType({"zone": "a"}), 1.0, 2.0),
    ),
    (records.mark, records.mark_of, NodeMarkRow("edge-1", "draining", "why", 1.0, 2.0)),
    (records.mark, records.mark_of, NodeMarkRow("edge-1", "cordoned", "", 1.0)),
    (records.event, records.event_of, EventRow(4, 1.0, "warning", "NodeLost", "node/e", "e", "m")),
    (
        records.credential,
        records.credential_of,
        CredentialRow("api-key", "k", "ab", "d", 1.0, None, 2.0, None),
    ),
    (records.certificate, records.certificate_of, CertificateRow(0xFFEE, "admin/a", 1, 2, None)),
    (records.member, records.member_of, MemberRow("c-1", "10.0.0.1:7070", "standby", 5.0)),
]


@pytest.mark.parametrize(("encode", "decode", "row"), ROWS)
def test_records_round_trip(encode: object, decode: object, row: object) -> None:
    value = encode(row)  # type: ignore[operator]
    assert records.load(b"k", value, decode) == row  # type: ignore[arg-type]


def test_an_unreadable_value_names_its_key() -> None:
    for value in (b"not json", b"[1]", b'{"value": "x"}', b"{}"):
        with pytest.raises(StoreError, match="/edgefleet/c/counters/generation holds a value"):
            records.load(b"/edgefleet/c/counters/generation", value, records.counter_of)
