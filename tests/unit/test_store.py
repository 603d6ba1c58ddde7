"""The controller's state store, method by method, on real SQLite files."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgefleet_common.cluster import DEFAULT_CLUSTER
from orchestrator.errors import EdgeFleetError
from orchestrator.store import (
    DeploymentRow,
    EventRow,
    NodeAssignment,
    Revision,
    SqliteStore,
    StoreError,
)


class Clock:
    """A clock that moves one second per reading."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> Iterator[SqliteStore]:
    with SqliteStore.open(tmp_path / "store.sqlite", clock=clock) as opened:
        yield opened


def apply(
    store: SqliteStore, deployment: str, text: str = "manifest", cause: str = "apply"
) -> Revision:
    return store.add_revision(
        deployment,
        source="fleet.yaml",
        manifest=f"{deployment}: {text}",
        desired_json=f'{{"text": "{text}"}}',
        digest=f"sha256:{deployment}-{text}",
        cause=cause,
    )


# Identity


def test_controller_id_is_made_once_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    with SqliteStore.open(path) as first:
        made = first.controller_id
    with SqliteStore.open(path) as again:
        assert again.controller_id == made
    with SqliteStore.open(tmp_path / "other.sqlite") as other:
        assert other.controller_id != made
    assert len(made) >= 32


def test_cluster_name_is_set_on_creation_and_checked_later(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    with SqliteStore.open(path, cluster_name="factory-7") as store:
        assert store.cluster_name == "factory-7"
    with SqliteStore.open(path) as store:
        assert store.cluster_name == "factory-7"
    with pytest.raises(StoreError, match="belongs to cluster 'factory-7', not 'lab'"):
        SqliteStore.open(path, cluster_name="lab")
    with SqliteStore.open(tmp_path / "unnamed.sqlite") as store:
        assert store.cluster_name == DEFAULT_CLUSTER


def test_store_error_is_an_edgefleet_error() -> None:
    assert issubclass(StoreError, EdgeFleetError)


# Revisions and deployments


def test_revisions_are_numbered_per_deployment_from_one(store: SqliteStore, clock: Clock) -> None:
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


def test_current_is_the_latest_revision_of_each_live_deployment_by_name(store: SqliteStore) -> None:
    apply(store, "vision", "v1")
    apply(store, "chat", "v1")
    latest_chat = apply(store, "chat", "v2")
    apply(store, "audio", "v1")
    store.delete_deployment("audio")
    current = store.current()
    assert [r.deployment for r in current] == ["chat", "vision"]
    assert current[0] == latest_chat


def test_revision_and_revisions_newest_first(store: SqliteStore) -> None:
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
    store: SqliteStore, clock: Clock
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


def test_deployments_lists_all_by_name(store: SqliteStore) -> None:
    apply(store, "vision")
    apply(store, "chat")
    apply(store, "chat", "v2")
    store.delete_deployment("vision")
    rows = store.deployments()
    assert [(d.name, d.current_revision, d.deleted) for d in rows] == [
        ("chat", 2, False),
        ("vision", 1, True),
    ]


def test_a_deployment_needs_a_name(store: SqliteStore) -> None:
    with pytest.raises(ValueError, match="name"):
        apply(store, "")


def test_revisions_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    with SqliteStore.open(path) as store:
        written = apply(store, "chat", "v1")
    with SqliteStore.open(path) as store:
        assert store.current() == [written]
        assert apply(store, "chat", "v2").number == 2


# Assignment and generations


def test_generations_increase_across_nodes_and_only_for_changed_ones(
    store: SqliteStore, clock: Clock
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


def test_identical_desired_state_gets_no_new_generation(store: SqliteStore) -> None:
    store.save_assignment({"edge-1": "a"})
    before = store.assignment()
    assert store.save_assignment({"edge-1": "a"}) == {}
    assert store.save_assignment({}) == {}
    assert store.assignment() == before
    assert store.last_generation() == 1


def test_generation_floor_lifts_the_counter_but_never_lowers_it(store: SqliteStore) -> None:
    store.save_assignment({"edge-1": "a"})
    assert store.raise_generation_floor(40) == 40
    assert store.save_assignment({"edge-1": "b", "edge-2": "c"}) == {"edge-1": 41, "edge-2": 42}
    assert store.raise_generation_floor(10) == 42
    assert store.save_assignment({"edge-1": "c"}) == {"edge-1": 43}


def test_a_forced_node_is_renumbered_even_when_unchanged(store: SqliteStore) -> None:
    store.save_assignment({"edge-1": "a", "edge-2": "b"})
    # edge-2 reported generation 50 (the store was restored from an older backup).
    store.raise_generation_floor(50)
    assert store.save_assignment({"edge-1": "a", "edge-2": "b"}, force=["edge-2"]) == {"edge-2": 51}
    assert store.assignment()["edge-1"].generation == 1
    with pytest.raises(ValueError, match="edge-3"):
        store.save_assignment({"edge-1": "a"}, force=["edge-3"])
    assert store.last_generation() == 51


def test_the_counter_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    with SqliteStore.open(path) as store:
        store.save_assignment({"edge-1": "a", "edge-2": "b"})
        store.raise_generation_floor(9)
    with SqliteStore.open(path) as store:
        assert store.last_generation() == 9
        assert store.save_assignment({"edge-1": "z"}) == {"edge-1": 10}


# Nodes


def test_upsert_node_records_and_updates_keeping_first_sighting(store: SqliteStore) -> None:
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


def test_node_labels_cannot_be_changed_through_a_row(store: SqliteStore) -> None:
    row = store.upsert_node(
        "edge-1", address="h:1", discovered_by="mdns", labels={"a": "1"}, last_seen=1.0
    )
    with pytest.raises(TypeError):
        row.labels["a"] = "2"  # type: ignore[index]


def test_upsert_node_rejects_an_unknown_discovery_source(store: SqliteStore) -> None:
    with pytest.raises(ValueError, match="discovered_by"):
        store.upsert_node(
            "edge-1",
            address="h:1",
            discovered_by="carrier-pigeon",  # type: ignore[arg-type]
            labels={},
            last_seen=1.0,
        )


def test_forget_node_drops_it_and_its_assignment(store: SqliteStore) -> None:
    store.upsert_node("edge-1", address="h:1", discovered_by="mdns", labels={}, last_seen=1.0)
    store.upsert_node("edge-2", address="h:2", discovered_by="mdns", labels={}, last_seen=1.0)
    store.save_assignment({"edge-1": "a", "edge-2": "b"})
    assert store.forget_node("edge-1") is True
    assert store.forget_node("edge-1") is False
    assert [n.node_id for n in store.nodes()] == ["edge-2"]
    assert list(store.assignment()) == ["edge-2"]
    # Back again: still a generation newer than anything it ever held.
    assert store.save_assignment({"edge-1": "a"}) == {"edge-1": 3}


# Events


def event(store: SqliteStore, n: int, obj: str = "node/edge-1") -> EventRow:
    return store.add_event(
        severity="info", reason="NodeReady", object=obj, node_id="edge-1", message=f"event {n}"
    )


def test_add_event_numbers_and_times_events(store: SqliteStore, clock: Clock) -> None:
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


def test_events_after_an_id_and_about_an_object(store: SqliteStore) -> None:
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


def test_events_with_a_limit_are_the_newest_still_oldest_first(store: SqliteStore) -> None:
    for n in range(1, 11):
        event(store, n, "node/edge-1" if n % 2 else "node/edge-2")
    assert [e.id for e in store.events(limit=3)] == [8, 9, 10]
    assert [e.id for e in store.events(after_id=8, limit=5)] == [9, 10]
    assert [e.id for e in store.events(limit=2, object="node/edge-1")] == [7, 9]
    assert store.events(limit=0) == []
    with pytest.raises(ValueError, match="limit"):
        store.events(limit=-1)


def test_events_are_trimmed_to_the_limit_and_ids_never_reused(tmp_path: Path) -> None:
    with SqliteStore.open(tmp_path / "store.sqlite", max_events=20) as store:
        for n in range(1, 101):
            last = event(store, n)
            kept = store.events()
            assert len(kept) <= 20
            assert kept[-1] == last
        assert len(store.events()) >= 18  # trims only a tenth below the limit
        assert [e.id for e in store.events()] == list(range(101 - len(store.events()), 101))
    with SqliteStore.open(tmp_path / "store.sqlite", max_events=20) as store:
        assert event(store, 101).id == 101


def test_a_limit_of_one_keeps_the_newest_event(tmp_path: Path) -> None:
    with SqliteStore.open(tmp_path / "store.sqlite", max_events=1) as store:
        for n in range(1, 4):
            event(store, n)
        assert [e.message for e in store.events()] == ["event 3"]


def test_events_keep_ten_thousand_by_default(tmp_path: Path) -> None:
    with SqliteStore.open(tmp_path / "store.sqlite") as store:
        for n in range(1, 10_002):
            event(store, n)
        kept = store.events()
        assert 9_000 <= len(kept) <= 10_000
        assert kept[-1].id == 10_001


@pytest.mark.parametrize(
    ("severity", "reason", "match"),
    [("fatal", "NodeReady", "severity"), ("info", "Node Ready", "one word"), ("info", "", "word")],
)
def test_add_event_rejects_bad_severity_and_reason(
    store: SqliteStore, severity: str, reason: str, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        store.add_event(
            severity=severity,  # type: ignore[arg-type]
            reason=reason,
            object="node/edge-1",
            message="m",
        )
    assert store.events() == []


# Settings


def test_settings_round_trip_and_persist(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    with SqliteStore.open(path) as store:
        assert store.get_setting("join_token") is None
        store.set_setting("join_token", "abc")
        store.set_setting("join_token", "def")
        store.set_setting("controller_id", "not-the-identity")
        identity = store.controller_id
    with SqliteStore.open(path) as store:
        assert store.get_setting("join_token") == "def"
        assert store.controller_id == identity  # settings never touch identity


# Lifetime and concurrency


def test_a_closed_store_says_so(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path / "store.sqlite")
    store.close()
    store.close()  # twice is fine
    with pytest.raises(StoreError, match="is closed"):
        store.nodes()


def test_calls_from_several_threads_do_not_interleave(store: SqliteStore) -> None:
    def work(worker: int) -> None:
        for n in range(50):
            event(store, n, f"node/edge-{worker}")
            store.save_assignment({f"edge-{worker}": f"state {n}"})

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [e.id for e in store.events()] == list(range(1, 201))
    generations = [a.generation for a in store.assignment().values()]
    assert store.last_generation() == 200
    assert len(set(generations)) == 4
