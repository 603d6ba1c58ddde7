"""The controller's state store, method by method, on real SQLite files."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgefleet_common.cluster import DEFAULT_CLUSTER
from orchestrator.errors import EdgeFleetError
from orchestrator.store import (
    EventRow,
    Revision,
    SqliteStore,
    StoreError,
    StoreHealth,
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


def test_revisions_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    with SqliteStore.open(path) as store:
        written = apply(store, "chat", "v1")
    with SqliteStore.open(path) as store:
        assert store.current() == [written]
        assert apply(store, "chat", "v2").number == 2


# Assignment and generations


def test_the_counter_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    with SqliteStore.open(path) as store:
        store.save_assignment({"edge-1": "a", "edge-2": "b"})
        store.raise_generation_floor(9)
    with SqliteStore.open(path) as store:
        assert store.last_generation() == 9
        assert store.save_assignment({"edge-1": "z"}) == {"edge-1": 10}


# Events


def event(store: SqliteStore, n: int, obj: str = "node/edge-1") -> EventRow:
    return store.add_event(
        severity="info", reason="NodeReady", object=obj, node_id="edge-1", message=f"event {n}"
    )


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


# Leader term, health and change notices of a single controller


def test_each_start_begins_a_higher_term_kept_in_the_file(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    with SqliteStore.open(path) as store:
        assert store.begin_term() == 1
        assert store.begin_term() == 2
    with SqliteStore.open(path) as store:
        assert store.begin_term() == 3


def test_a_single_controller_is_always_the_leader(store: SqliteStore) -> None:
    store.fence(store.begin_term())
    assert store.save_assignment({"edge-1": "a"}) == {"edge-1": 1}
    assert store.number_routes("table") == 1
    store.unfence()
    with pytest.raises(ValueError, match="term"):
        store.fence(0)


def test_health_names_the_file_and_says_when_closed(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path / "store.sqlite")
    assert store.health() == StoreHealth("sqlite", True, str(tmp_path / "store.sqlite"))
    store.close()
    health = store.health()
    assert (health.kind, health.writable) == ("sqlite", False)
    assert "closed" in health.detail


def test_change_notices_come_after_commit_on_the_writing_thread(store: SqliteStore) -> None:
    heard: list[tuple[set[str], bool, int]] = []

    def listen(areas: set[str]) -> None:
        heard.append(
            (areas, threading.current_thread() is threading.main_thread(), len(store.nodes()))
        )

    def broken(areas: set[str]) -> None:
        raise RuntimeError("listener bug")

    store.on_change(broken)
    store.on_change(listen)
    store.upsert_node("edge-1", address="h:1", discovered_by="mdns", labels={}, last_seen=1.0)
    store.forget_node("edge-1")
    assert heard == [({"nodes"}, True, 1), ({"nodes", "assignment"}, True, 0)]
    heard.clear()
    assert store.set_setting_if_absent("k", "v") == "v"
    assert store.set_setting_if_absent("k", "w") == "v"  # nothing written: no notice
    with pytest.raises(ValueError, match="name"):
        apply(store, "")  # failed: no notice
    assert heard == [({"settings"}, True, 0)]
