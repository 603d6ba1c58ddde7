"""What every `StateStore` backend promises, checked on each: SQLite and etcd.

The etcd runs are on a real etcd member started for this module.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from orchestrator.etcd.client import EtcdClient
from orchestrator.etcd.txn import Compare, Op
from orchestrator.store import (
    DEFAULT_MAX_EVENTS,
    CertificateRow,
    DeploymentRow,
    EventRow,
    MemberRow,
    NodeAssignment,
    NodeMarkRow,
    Revision,
    SqliteStore,
    StateStore,
)
from orchestrator.store.etcd_store import EtcdStore

if TYPE_CHECKING:
    from tests.etcd_server import EtcdCluster

pytest_plugins = ("tests.etcd_server",)


class Clock:
    """A clock that moves one second per reading."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            self.now += 1.0
            return self.now


OpenStore = Callable[..., StateStore]
"""Opens another store on the same storage (e.g. `max_events=20`)."""


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["sqlite", "etcd"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path, clock: Clock) -> Iterator[OpenStore]:
    opened: list[StateStore] = []
    # etcd: a cluster name of its own keeps each test's keys apart on the module's etcd.
    cluster = f"contract-{uuid.uuid4().hex[:12]}"
    etcd: EtcdCluster | None = request.getfixturevalue("etcd") if request.param == "etcd" else None

    def open_one(max_events: int = DEFAULT_MAX_EVENTS) -> StateStore:
        store: StateStore
        if etcd is None:
            store = SqliteStore.open(tmp_path / "store.sqlite", max_events=max_events, clock=clock)
        else:
            data_dir = tmp_path / f"controller-{len(opened)}"
            store = EtcdStore.open(
                etcd.target(),
                data_dir=data_dir,
                cluster_name=cluster,
                max_events=max_events,
                clock=clock,
            )
        opened.append(store)
        return store

    yield open_one
    for store in opened:
        store.close()


@pytest.fixture
def store(open_store: OpenStore) -> StateStore:
    return open_store()


Lead = Callable[[StateStore], None]
"""Makes a store's controller the leader and fences it, as the controller does."""


@pytest.fixture
def lead(request: pytest.FixtureRequest) -> Iterator[Lead]:
    held: list[tuple[EtcdClient, int]] = []

    def fence_as_leader(store: StateStore) -> None:
        if not isinstance(store, EtcdStore):
            store.fence(1)  # a single controller on its file always leads
            return
        etcd: EtcdCluster = request.getfixturevalue("etcd")
        client = etcd.client()
        lease = client.lease_grant(60)
        held.append((client, lease))
        key = store.leader_key
        made = client.txn([Compare.create_revision(key, "=", 0)], [Op.put(key, b"{}", lease)])
        assert made.succeeded, "the leader key was held already"
        leader = client.get(key)
        assert leader is not None
        store.fence(leader.create_revision)

    yield fence_as_leader
    for client, lease in held:
        client.lease_revoke(lease)
        client.close()


def apply(
    store: StateStore, deployment: str, text: str = "manifest", cause: str = "apply"
) -> Revision:
    return store.add_revision(
        deployment,
        source="fleet.yaml",
        manifest=f"{deployment}: {text}",
        desired_json=f'{{"text": "{text}"}}',
        digest=f"sha256:{deployment}-{text}",
        cause=cause,
    )


def event(store: StateStore, n: int, obj: str = "node/edge-1") -> EventRow:
    return store.add_event(
        severity="info", reason="NodeReady", object=obj, node_id="edge-1", message=f"event {n}"
    )


def test_revisions_are_numbered_per_deployment_from_one(store: StateStore, clock: Clock) -> None:
    first = apply(store, "chat", "v1")
    assert first == Revision(
        deployment="chat",
        number=1,
        applied_at=clock.now,
        source="fleet.yaml",
        manifest="chat: v1",
        desired_json='{"text": "v1"}',
        digest="sha256:chat-v1",
        cause="apply",
    )
    assert apply(store, "vision", "v1").number == 1
    assert apply(store, "chat", "v2").number == 2
    assert apply(store, "chat", "v3").number == 3
    assert apply(store, "vision", "v2").number == 2


def test_current_is_the_latest_revision_of_each_live_deployment_by_name(store: StateStore) -> None:
    apply(store, "vision", "v1")
    apply(store, "chat", "v1")
    latest_chat = apply(store, "chat", "v2")
    apply(store, "audio", "v1")
    store.delete_deployment("audio")
    current = store.current()
    assert [r.deployment for r in current] == ["chat", "vision"]
    assert current[0] == latest_chat


def test_revision_and_revisions_newest_first(store: StateStore) -> None:
    for text in ("v1", "v2", "v3"):
        apply(store, "chat", text)
    assert [r.number for r in store.revisions("chat")] == [3, 2, 1]
    assert [r.manifest for r in store.revisions("chat")] == ["chat: v3", "chat: v2", "chat: v1"]
    second = store.revision("chat", 2)
    assert second is not None
    assert second.manifest == "chat: v2"
    assert store.revision("chat", 4) is None
    assert store.revision("nobody", 1) is None
    assert store.revisions("nobody") == []


def test_delete_keeps_history_and_reapply_continues_numbering(
    store: StateStore, clock: Clock
) -> None:
    apply(store, "chat", "v1")
    apply(store, "chat", "v2")
    assert store.delete_deployment("chat") is True
    deleted_at = clock.now
    assert store.delete_deployment("chat") is False  # already deleted
    assert store.delete_deployment("nobody") is False
    assert store.current() == []
    assert store.deployments() == [
        DeploymentRow(name="chat", current_revision=2, deleted=True, updated_at=deleted_at)
    ]
    assert [r.number for r in store.revisions("chat")] == [2, 1]  # kept for rollback

    again = apply(store, "chat", "v3")
    assert again.number == 3
    assert store.deployments() == [
        DeploymentRow(name="chat", current_revision=3, deleted=False, updated_at=clock.now)
    ]
    assert store.current() == [again]


def test_deployments_lists_all_by_name(store: StateStore) -> None:
    apply(store, "vision")
    apply(store, "chat")
    apply(store, "chat", "v2")
    store.delete_deployment("vision")
    rows = store.deployments()
    assert [(d.name, d.current_revision, d.deleted) for d in rows] == [
        ("chat", 2, False),
        ("vision", 1, True),
    ]


def test_a_deployment_needs_a_name(store: StateStore) -> None:
    with pytest.raises(ValueError, match="name"):
        apply(store, "")


def test_generations_increase_across_nodes_and_only_for_changed_ones(
    store: StateStore, clock: Clock
) -> None:
    assert store.assignment() == {}
    assert store.last_generation() == 0
    first = store.save_assignment({"edge-2": "b1", "edge-1": "a1", "edge-3": "c1"})
    assert first == {"edge-1": 1, "edge-2": 2, "edge-3": 3}
    saved_at = clock.now

    second = store.save_assignment({"edge-1": "a1", "edge-2": "b2", "edge-3": "c1"})
    assert second == {"edge-2": 4}
    third = store.save_assignment({"edge-3": "c2", "edge-4": "d1"})
    assert third == {"edge-3": 5, "edge-4": 6}

    assignment = store.assignment()
    assert assignment["edge-1"] == NodeAssignment("edge-1", 1, "a1", saved_at)
    assert assignment["edge-2"].generation == 4
    assert assignment["edge-2"].desired_json == "b2"
    assert {n: a.generation for n, a in assignment.items()} == {
        "edge-1": 1,
        "edge-2": 4,
        "edge-3": 5,
        "edge-4": 6,
    }
    assert store.last_generation() == 6


def test_identical_desired_state_gets_no_new_generation(store: StateStore) -> None:
    store.save_assignment({"edge-1": "a"})
    before = store.assignment()
    assert store.save_assignment({"edge-1": "a"}) == {}
    assert store.save_assignment({}) == {}
    assert store.assignment() == before
    assert store.last_generation() == 1


def test_generation_floor_lifts_the_counter_but_never_lowers_it(store: StateStore) -> None:
    store.save_assignment({"edge-1": "a"})
    assert store.raise_generation_floor(40) == 40
    assert store.save_assignment({"edge-1": "b", "edge-2": "c"}) == {"edge-1": 41, "edge-2": 42}
    assert store.raise_generation_floor(10) == 42
    assert store.save_assignment({"edge-1": "c"}) == {"edge-1": 43}


def test_a_forced_node_is_renumbered_even_when_unchanged(store: StateStore) -> None:
    store.save_assignment({"edge-1": "a", "edge-2": "b"})
    # edge-2 reported generation 50 (the store was restored from an older backup).
    store.raise_generation_floor(50)
    assert store.save_assignment({"edge-1": "a", "edge-2": "b"}, force=["edge-2"]) == {"edge-2": 51}
    assert store.assignment()["edge-1"].generation == 1
    with pytest.raises(ValueError, match="edge-3"):
        store.save_assignment({"edge-1": "a"}, force=["edge-3"])
    assert store.last_generation() == 51


def test_upsert_node_records_and_updates_keeping_first_sighting(store: StateStore) -> None:
    row = store.upsert_node(
        "edge-1",
        address="10.0.0.5:7443",
        discovered_by="mdns",
        labels={"zone": "a", "gpu": "none"},
        last_seen=100.0,
    )
    assert row.first_seen == row.last_seen == 100.0
    assert dict(row.labels) == {"gpu": "none", "zone": "a"}

    store.upsert_node(
        "edge-1", address="10.0.0.6:7443", discovered_by="static", labels={}, last_seen=250.0
    )
    store.upsert_node(
        "edge-0", address="10.0.0.9:7443", discovered_by="manifest", labels={}, last_seen=5.0
    )
    nodes = store.nodes()
    assert [n.node_id for n in nodes] == ["edge-0", "edge-1"]
    updated = nodes[1]
    assert (updated.address, updated.discovered_by) == ("10.0.0.6:7443", "static")
    assert (updated.first_seen, updated.last_seen) == (100.0, 250.0)
    assert dict(updated.labels) == {}


def test_node_labels_cannot_be_changed_through_a_row(store: StateStore) -> None:
    row = store.upsert_node(
        "edge-1", address="h:1", discovered_by="mdns", labels={"a": "1"}, last_seen=1.0
    )
    with pytest.raises(TypeError):
        row.labels["a"] = "2"  # type: ignore[index]


def test_upsert_node_rejects_an_unknown_discovery_source(store: StateStore) -> None:
    with pytest.raises(ValueError, match="discovered_by"):
        store.upsert_node(
            "edge-1",
            address="h:1",
            discovered_by="carrier-pigeon",  # type: ignore[arg-type]
            labels={},
            last_seen=1.0,
        )


def test_forget_node_drops_it_and_its_assignment(store: StateStore) -> None:
    store.upsert_node("edge-1", address="h:1", discovered_by="mdns", labels={}, last_seen=1.0)
    store.upsert_node("edge-2", address="h:2", discovered_by="mdns", labels={}, last_seen=1.0)
    store.save_assignment({"edge-1": "a", "edge-2": "b"})
    assert store.forget_node("edge-1") is True
    assert store.forget_node("edge-1") is False
    assert [n.node_id for n in store.nodes()] == ["edge-2"]
    assert list(store.assignment()) == ["edge-2"]
    # Back again: still a generation newer than anything it ever held.
    assert store.save_assignment({"edge-1": "a"}) == {"edge-1": 3}


def test_add_event_numbers_and_times_events(store: StateStore, clock: Clock) -> None:
    first = store.add_event(
        severity="warning",
        reason="NodeSuspect",
        object="node/edge-1",
        node_id="edge-1",
        message="status stream broke",
    )
    assert first == EventRow(
        id=1,
        time=clock.now,
        severity="warning",
        reason="NodeSuspect",
        object="node/edge-1",
        node_id="edge-1",
        message="status stream broke",
    )
    second = store.add_event(
        severity="info", reason="Applied", object="deployment/chat", message="revision 1"
    )
    assert second.id == 2
    assert second.node_id == ""
    assert store.events() == [first, second]


def test_events_after_an_id_and_about_an_object(store: StateStore) -> None:
    rows = [event(store, n, "node/edge-1" if n % 2 else "node/edge-2") for n in range(1, 9)]
    assert store.events(after_id=5) == rows[5:]
    assert [e.message for e in store.events(object="node/edge-2")] == [
        "event 2",
        "event 4",
        "event 6",
        "event 8",
    ]
    assert [e.id for e in store.events(after_id=4, object="node/edge-1")] == [5, 7]
    assert store.events(object="node/nobody") == []


def test_events_with_a_limit_are_the_newest_still_oldest_first(store: StateStore) -> None:
    for n in range(1, 11):
        event(store, n, "node/edge-1" if n % 2 else "node/edge-2")
    assert [e.id for e in store.events(limit=3)] == [8, 9, 10]
    assert [e.id for e in store.events(after_id=8, limit=5)] == [9, 10]
    assert [e.id for e in store.events(limit=2, object="node/edge-1")] == [7, 9]
    assert store.events(limit=0) == []
    with pytest.raises(ValueError, match="limit"):
        store.events(limit=-1)


@pytest.mark.parametrize(
    ("severity", "reason", "match"),
    [("fatal", "NodeReady", "severity"), ("info", "Node Ready", "one word"), ("info", "", "word")],
)
def test_add_event_rejects_bad_severity_and_reason(
    store: StateStore, severity: str, reason: str, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        store.add_event(
            severity=severity,  # type: ignore[arg-type]
            reason=reason,
            object="node/edge-1",
            message="m",
        )
    assert store.events() == []


def test_events_are_trimmed_to_the_limit_and_ids_never_reused(open_store: OpenStore) -> None:
    store = open_store(max_events=20)
    for n in range(1, 61):
        last = event(store, n)
        kept = store.events()
        assert len(kept) <= 20
        assert kept[-1] == last
    assert len(store.events()) >= 18  # SQLite trims a tenth below the limit at once
    assert [e.id for e in store.events()] == list(range(61 - len(store.events()), 61))
    assert event(open_store(max_events=20), 61).id == 61


# Cordoned and draining nodes


def test_marks_replace_each_other_and_only_a_draining_node_drains(
    store: StateStore, clock: Clock
) -> None:
    cordoned = store.mark_node("edge-1", "cordoned", reason="disk swap")
    assert cordoned == NodeMarkRow("edge-1", "cordoned", "disk swap", clock.now)
    assert store.mark_drained("edge-1") is None
    assert store.mark_drained("edge-9") is None
    draining = store.mark_node("edge-1", "draining", reason="move")
    drained = store.mark_drained("edge-1")
    assert drained == NodeMarkRow("edge-1", "draining", "move", draining.since, clock.now)
    store.mark_node("edge-0", "cordoned")
    assert store.node_marks() == {
        "edge-0": NodeMarkRow("edge-0", "cordoned", "", clock.now),
        "edge-1": drained,
    }
    store.mark_node("edge-1", "cordoned", reason="again")
    assert store.node_marks()["edge-1"].drained_at is None
    assert store.unmark_node("edge-1") is True
    assert store.unmark_node("edge-1") is False
    assert list(store.node_marks()) == ["edge-0"]


def test_bad_marks_are_refused_and_change_nothing(store: StateStore) -> None:
    with pytest.raises(ValueError, match="mark must be one of"):
        store.mark_node("edge-1", "evicted")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs an id"):
        store.mark_node("", "cordoned")
    assert store.node_marks() == {}


# Routing table


def test_routes_keep_their_generation_for_the_same_content(store: StateStore) -> None:
    assert store.routes_generation() == 0
    assert store.number_routes("table-a") == 1
    assert store.number_routes("table-a") == 1
    assert store.number_routes("table-b") == 2
    assert store.number_routes("table-b", floor=2) == 2
    assert store.number_routes("table-b", floor=7) == 8  # a node holds 7: outrank it
    assert store.number_routes("table-a", floor=3) == 9
    assert store.routes_generation() == 9


# Settings


def test_settings_set_replace_and_set_if_absent(store: StateStore) -> None:
    assert store.get_setting("cluster_ca") is None
    assert store.set_setting_if_absent("cluster_ca", "first") == "first"
    assert store.set_setting_if_absent("cluster_ca", "second") == "first"
    assert store.get_setting("cluster_ca") == "first"
    store.set_setting("cluster_ca", "third")
    assert store.get_setting("cluster_ca") == "third"
    store.set_setting("a/b c", "odd key")
    assert store.get_setting("a/b c") == "odd key"
    assert store.get_setting("a") is None
    with pytest.raises(ValueError, match="key"):
        store.set_setting("", "x")


# Credentials and certificates


def test_credentials_are_recorded_used_and_revoked(store: StateStore, clock: Clock) -> None:
    token = store.add_credential(
        "join-token", "t1", secret_sha256="aa", description="lab", expires_at=None
    )
    assert token.created_at == clock.now
    key = store.add_credential(
        "api-key", "k1", secret_sha256="bb", description="app", expires_at=clock.now + 100
    )
    store.add_credential("join-token", "t0", secret_sha256="cc", description="", expires_at=5.0)
    assert store.credential("join-token", "t1") == token
    assert store.credential("join-token", "k1") is None
    assert [c.id for c in store.credentials("join-token")] == ["t1", "t0"]
    assert store.credentials("api-key") == [key]
    store.mark_credential_used("api-key", "k1")
    used = store.credential("api-key", "k1")
    assert used is not None
    assert used.last_used_at == clock.now
    assert store.revoke_credential("api-key", "k1") is True
    assert store.revoke_credential("api-key", "k1") is False
    assert store.revoke_credential("api-key", "nobody") is False
    revoked = store.credential("api-key", "k1")
    assert revoked is not None
    assert revoked.usable(clock.now) == "revoked"
    with pytest.raises(ValueError, match="kind"):
        store.add_credential(
            "password",  # type: ignore[arg-type]
            "p",
            secret_sha256="",
            description="",
            expires_at=None,
        )


def test_certificates_of_nodes_and_admins(store: StateStore, clock: Clock) -> None:
    not_after = clock.now + 1000
    store.add_certificate(0xA1, "edge-1", not_after=not_after)
    issued = clock.now
    store.add_certificate(0xB2, "admin/alice", not_after=clock.now + 1000)
    store.add_certificate(0xB3, "admin/alice", not_after=clock.now + 2000)
    store.add_certificate(0xC4, "admin/bob", not_after=clock.now + 1000)
    assert store.certificate_revoked(0xA1) is False
    assert store.certificate_revoked(0xFF) is None
    assert store.certificates("edge-") == [CertificateRow(0xA1, "edge-1", issued, not_after, None)]
    assert [(c.serial, c.owner) for c in store.certificates("admin/")] == [
        (0xB2, "admin/alice"),
        (0xB3, "admin/alice"),
        (0xC4, "admin/bob"),
    ]
    assert store.revoke_certificates("admin/alice") == 2
    revoked_at = clock.now
    assert store.revoke_certificates("admin/alice") == 0
    assert store.revoke_certificates("admin/nobody") == 0
    assert store.certificate_revoked(0xB2) is True
    assert store.certificate_revoked(0xC4) is False
    assert {c.serial: c.revoked_at for c in store.certificates("admin/")} == {
        0xB2: revoked_at,
        0xB3: revoked_at,
        0xC4: None,
    }
    assert store.revoked_nodes() == {}  # revoking certificates does not revoke the owner


def test_revoking_a_node_revokes_its_certificates(store: StateStore, clock: Clock) -> None:
    assert store.live_certificate_until("edge-1") is None
    store.add_certificate(1, "edge-1", not_after=clock.now + 100)
    latest = clock.now + 500
    store.add_certificate(2, "edge-1", not_after=latest)
    store.add_certificate(3, "edge-2", not_after=clock.now + 100)
    assert store.live_certificate_until("edge-1") == latest
    assert store.revoke_node("edge-1", "stolen") == 2
    assert store.live_certificate_until("edge-1") is None
    assert store.revoke_node("edge-1", "still stolen") == 0
    assert store.revoked_nodes() == {"edge-1": "still stolen"}
    assert store.certificate_revoked(3) is False


# Health, fencing and change notices


def test_a_fresh_store_is_writable(store: StateStore) -> None:
    health = store.health()
    assert health.writable is True
    assert health.kind in ("sqlite", "etcd")
    assert health.detail


def test_fencing_with_the_current_term_lets_leader_writes_through(
    store: StateStore, lead: Lead
) -> None:
    lead(store)
    assert store.save_assignment({"edge-1": "a"}) == {"edge-1": 1}
    store.unfence()
    assert store.raise_generation_floor(3) == 3


# Leader terms and the cluster's controllers


def test_each_term_is_one_above_the_last_and_above_the_floor(
    open_store: OpenStore, lead: Lead
) -> None:
    store = open_store()
    assert store.current_term() == 0
    lead(store)
    assert store.begin_term() == 1
    assert store.begin_term() == 2
    assert store.begin_term(floor=10) == 11  # a node reported term 10
    assert store.begin_term(floor=5) == 12  # a floor below the counter changes nothing
    assert store.current_term() == 12
    with pytest.raises(ValueError, match="floor must not be negative"):
        store.begin_term(-1)
    assert store.current_term() == 12
    store.close()
    assert open_store().current_term() == 12  # kept in the store


def test_controllers_registered_lately_are_the_members(store: StateStore, clock: Clock) -> None:
    assert store.members() == []
    store.register_member("c-2", "10.0.0.2:7070", "standby")
    store.register_member("c-1", "10.0.0.1:7070", "standby")
    first_seen = clock.now
    store.register_member("c-1", "10.0.0.9:7070", "leader")  # re-registered: replaced
    last_seen = clock.now
    assert store.members() == [
        MemberRow("c-1", "10.0.0.9:7070", "leader", last_seen),
        MemberRow("c-2", "10.0.0.2:7070", "standby", first_seen - 1),
    ]
    # The clock moves one second per reading: the next call reads last_seen + 2.
    assert clock.now == last_seen + 1
    assert [m.controller_id for m in store.members(within_s=2.5)] == ["c-1"]
    assert store.members(within_s=2.5) == []  # last_seen + 3
    with pytest.raises(ValueError, match="within_s must not be negative"):
        store.members(within_s=-1)
    with pytest.raises(ValueError, match="needs an id"):
        store.register_member("", "10.0.0.3:7070", "standby")


def test_terms_and_member_heartbeats_fire_no_change_notice(store: StateStore, lead: Lead) -> None:
    heard: list[set[str]] = []
    settled = threading.Event()

    def listen(areas: set[str]) -> None:
        heard.append(areas)
        if "settings" in areas:
            settled.set()

    lead(store)
    store.on_change(listen)
    store.register_member("c-1", "10.0.0.1:7070", "leader")
    store.begin_term()
    store.register_member("c-1", "10.0.0.1:7070", "leader")
    # Notices come in order: once the setting's is heard, any earlier one would have been.
    store.set_setting("k", "v")
    assert settled.wait(10), "no change notice for the setting"
    assert heard == [{"settings"}]


def test_on_change_names_the_areas_written(store: StateStore) -> None:
    seen: list[set[str]] = []
    heard = threading.Event()

    def listen(areas: set[str]) -> None:
        seen.append(areas)
        heard.set()

    store.on_change(listen)
    writes: list[tuple[str, Callable[[], object]]] = [
        ("revisions", lambda: apply(store, "chat")),
        ("assignment", lambda: store.save_assignment({"edge-1": "a"})),
        ("routes", lambda: store.number_routes("table")),
        (
            "nodes",
            lambda: store.upsert_node(
                "edge-1", address="h:1", discovered_by="static", labels={}, last_seen=1.0
            ),
        ),
        ("marks", lambda: store.mark_node("edge-1", "cordoned")),
        ("events", lambda: event(store, 1)),
        ("settings", lambda: store.set_setting("k", "v")),
        ("credentials", lambda: store.add_certificate(7, "edge-1", 1.0)),
    ]
    for area, write in writes:
        heard.clear()
        seen.clear()
        write()
        assert heard.wait(10), f"no change notice for {area}"
        assert area in set().union(*seen)
