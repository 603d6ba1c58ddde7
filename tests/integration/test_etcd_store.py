"""EtcdStore against real etcd: several controllers on one cluster's state, fencing by
leader term, an etcd outage and the recovery after it."""

from __future__ import annotations

import json
import stat
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from orchestrator.etcd.client import EtcdClient
from orchestrator.etcd.target import EtcdTarget
from orchestrator.etcd.txn import Compare, Op
from orchestrator.store import DEFAULT_MAX_EVENTS, NotLeader, StoreError, StoreUnavailable
from orchestrator.store import etcd_plans as plans
from orchestrator.store.etcd_keys import ClusterKeys
from orchestrator.store.etcd_store import EtcdStore
from orchestrator.store.etcd_writer import Decision, Snapshot
from tests.polling import wait_for

if TYPE_CHECKING:
    from tests.etcd_server import EtcdCluster

pytest_plugins = ("tests.etcd_server",)

Opener = Callable[..., EtcdStore]


@pytest.fixture
def cluster_name() -> str:
    return f"it-{uuid.uuid4().hex[:12]}"


def opener(etcd: EtcdCluster, tmp_path: Path, cluster_name: str) -> Iterator[Opener]:
    opened: list[EtcdStore] = []

    def open_store(data_dir: str = "", max_events: int = DEFAULT_MAX_EVENTS) -> EtcdStore:
        folder = tmp_path / (data_dir or f"controller-{len(opened)}")
        store = EtcdStore.open(
            etcd.target(), data_dir=folder, cluster_name=cluster_name, max_events=max_events
        )
        opened.append(store)
        return store

    yield open_store
    for store in opened:
        store.close()


@pytest.fixture
def open_store(etcd: EtcdCluster, tmp_path: Path, cluster_name: str) -> Iterator[Opener]:
    """Opens controllers' stores on the module's etcd, each with a data folder of its own."""
    yield from opener(etcd, tmp_path, cluster_name)


def apply(store: EtcdStore, deployment: str, text: str) -> int:
    revision = store.add_revision(
        deployment,
        source="fleet.yaml",
        manifest=text,
        desired_json="{}",
        digest=f"sha256:{text}",
        cause="apply",
    )
    return revision.number


def run_together(*work: Callable[[], None]) -> None:
    """Run each callable on its own thread, started at once; re-raise the first failure."""
    start = threading.Barrier(len(work))
    failures: list[BaseException] = []

    def run(job: Callable[[], None]) -> None:
        start.wait()
        try:
            job()
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(job,)) for job in work]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]


def take_leader_key(client: EtcdClient, key: bytes) -> int:
    """Make the leader key on a lease of our own, as an election would; returns its term."""
    lease = client.lease_grant(30)
    result = client.txn(
        [Compare.create_revision(key, "=", 0)], [Op.put(key, b'{"id":"test"}', lease)]
    )
    assert result.succeeded, "the leader key was held already"
    held = client.get(key)
    assert held is not None
    return held.create_revision


# Several controllers on one cluster


def test_revisions_from_two_controllers_at_once_are_all_kept_in_order(open_store: Opener) -> None:
    first, second = open_store(), open_store()
    numbers: dict[str, list[int]] = {"a": [], "b": []}

    def writer(store: EtcdStore, who: str) -> Callable[[], None]:
        return lambda: numbers[who].extend(apply(store, "chat", f"{who}{n}") for n in range(15))

    run_together(writer(first, "a"), writer(second, "b"))
    assert sorted(numbers["a"] + numbers["b"]) == list(range(1, 31))
    # Each controller's own revisions come out in the order it applied them.
    assert numbers["a"] == sorted(numbers["a"])
    assert numbers["b"] == sorted(numbers["b"])
    stored = {r.number: r.manifest for r in first.revisions("chat")}
    assert {stored[n] for n in numbers["a"]} == {f"a{n}" for n in range(15)}
    # Each store reads its own writes; the other's arrive through its watch.
    wait_for(
        "the second controller sees every revision",
        lambda: second.deployments()[0].current_revision == 30,
        10,
        lambda: f"it sees {second.deployments()}",
    )


def test_generations_are_unique_across_controllers(open_store: Opener) -> None:
    first, second = open_store(), open_store()
    handed: list[int] = []
    lock = threading.Lock()

    def saver(store: EtcdStore, node: str) -> Callable[[], None]:
        def save() -> None:
            for n in range(15):
                got = store.save_assignment({node: f"state {n}"})
                with lock:
                    handed.extend(got.values())

        return save

    run_together(saver(first, "edge-1"), saver(second, "edge-2"))
    assert sorted(handed) == list(range(1, 31))
    wait_for(
        "both controllers see every generation",
        lambda: first.last_generation() == second.last_generation() == 30,
        10,
        lambda: f"they see {first.last_generation()} and {second.last_generation()}",
    )
    assert first.raise_generation_floor(40) == 40
    assert second.save_assignment({"edge-3": "x"}) == {"edge-3": 41}


def test_a_change_by_one_controller_is_heard_by_the_other(open_store: Opener) -> None:
    first, second = open_store(), open_store()
    heard: list[set[str]] = []
    first.on_change(heard.append)
    apply(second, "chat", "v1")
    second.revoke_node("edge-9", "lost")
    wait_for(
        "the first controller hears of the second's writes",
        lambda: {"revisions", "credentials"} <= set().union(*heard),
        10,
        lambda: f"heard {heard}",
    )
    assert [r.manifest for r in first.current()] == ["v1"]
    assert first.revoked_nodes() == {"edge-9": "lost"}


# Fencing


def test_leader_writes_are_refused_once_the_leader_key_changes(
    open_store: Opener, etcd: EtcdCluster
) -> None:
    store = open_store()
    client = etcd.client()
    try:
        term = take_leader_key(client, store.leader_key)
        store.fence(term)
        assert store.save_assignment({"edge-1": "a"}) == {"edge-1": 1}
        assert store.number_routes("table") == 1

        client.txn([], [Op.delete(store.leader_key)])  # the lease ran out: another leads
        new_term = take_leader_key(client, store.leader_key)
        with pytest.raises(
            NotLeader, match=f"revision {term}; the key is now made at revision {new_term}"
        ):
            store.save_assignment({"edge-1": "b"})
        for leader_only in (
            lambda: store.raise_generation_floor(9),
            lambda: store.number_routes("other table"),
            lambda: store.forget_node("edge-1"),
        ):
            with pytest.raises(NotLeader):
                leader_only()
        store.mark_node("edge-1", "draining")
        with pytest.raises(NotLeader):
            store.mark_drained("edge-1")
        assert store.assignment()["edge-1"].desired_json == "a"  # nothing was written
        apply(store, "chat", "v1")  # not leader-only: any controller may write it

        store.fence(new_term)
        assert store.save_assignment({"edge-1": "b"}) == {"edge-1": 2}
        store.unfence()
        client.txn([], [Op.delete(store.leader_key)])
        assert store.raise_generation_floor(5) == 5
    finally:
        client.close()


def test_only_the_fenced_leader_takes_a_term(open_store: Opener, etcd: EtcdCluster) -> None:
    leader, standby = open_store(), open_store()
    client = etcd.client()
    try:
        with pytest.raises(NotLeader, match="only the leader takes a leader term"):
            standby.begin_term()
        made = take_leader_key(client, leader.leader_key)
        leader.fence(made)
        assert leader.begin_term(floor=6) == 7
        wait_for(
            "the standby sees the term",
            lambda: standby.current_term() == 7,
            10,
            lambda: f"it sees {standby.current_term()}",
        )
        with pytest.raises(NotLeader):
            standby.begin_term()  # unfenced: a standby never takes a term

        client.txn([], [Op.delete(leader.leader_key)])  # the lease ran out
        standby.fence(take_leader_key(client, leader.leader_key))
        with pytest.raises(NotLeader, match=f"leader key at revision {made}"):
            leader.begin_term()
        assert standby.begin_term() == 8
        wait_for(
            "the former leader sees the new term",
            lambda: leader.current_term() == 8,
            10,
            lambda: f"it sees {leader.current_term()}",
        )
        assert standby.current_term() == 8  # its own write
    finally:
        client.close()


# Identity


def test_the_controller_id_is_kept_in_the_data_folder(open_store: Opener, tmp_path: Path) -> None:
    first = open_store("one")
    made = first.controller_id
    first.close()
    assert open_store("one").controller_id == made
    assert open_store("two").controller_id != made
    kept = tmp_path / "one" / "controller-id"
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert kept.read_text().strip() == made


def test_keys_of_another_cluster_or_a_newer_layout_are_refused(
    open_store: Opener, etcd: EtcdCluster, cluster_name: str
) -> None:
    client = etcd.client()
    try:
        keys = ClusterKeys(cluster_name)
        client.put(keys.meta, json.dumps({"cluster_name": "lab", "format": 1}).encode())
        with pytest.raises(StoreError, match=r"belong to cluster 'lab'.*--cluster lab"):
            open_store()
        client.put(keys.meta, json.dumps({"cluster_name": cluster_name, "format": 99}).encode())
        with pytest.raises(StoreError, match="newer EdgeFleet"):
            open_store()
        client.put(keys.meta, b"not json")
        with pytest.raises(StoreError, match="cannot read"):
            open_store()
    finally:
        client.close()


# An etcd outage


@pytest.fixture
def open_on_fresh(etcd_fresh: EtcdCluster, tmp_path: Path, cluster_name: str) -> Iterator[Opener]:
    yield from opener(etcd_fresh, tmp_path, cluster_name)


@pytest.mark.slow
def test_without_etcd_reads_go_on_writes_fail_clearly_and_recover(
    open_on_fresh: Opener, etcd_fresh: EtcdCluster
) -> None:
    store = open_on_fresh()
    apply(store, "chat", "v1")
    assert store.health().writable is True

    etcd_fresh.members[0].stop()
    with pytest.raises(
        StoreUnavailable, match=r"does not answer.*read-only until it is back"
    ) as raised:
        apply(store, "chat", "v2")
    assert str(raised.value).count("does not answer") == 1, str(raised.value)
    health = store.health()
    assert (health.kind, health.writable) == ("etcd", False)
    assert "read-only" in health.detail
    assert [r.manifest for r in store.current()] == ["v1"]  # reads are served from memory
    assert store.revisions("chat")[0].number == 1

    etcd_fresh.members[0].start()
    etcd_fresh.wait_ready()
    wait_for(
        "the store is writable again",
        lambda: store.health().writable,
        20,
        lambda: f"{store.health()}",
    )
    # A write that timed out may still have landed: either way numbering stays whole.
    latest = apply(store, "chat", "v3")
    assert [r.number for r in store.revisions("chat")] == list(range(latest, 0, -1))


def test_opening_without_etcd_says_so_once_and_what_to_check(tmp_path: Path) -> None:
    # Ports 1 and 2 on loopback: nothing listens there.
    target = EtcdTarget(endpoints=("127.0.0.1:1", "127.0.0.1:2"))
    with pytest.raises(StoreUnavailable) as raised:
        EtcdStore.open(target, data_dir=tmp_path, cluster_name="x")
    message = str(raised.value)
    assert message.startswith(
        "cannot open the store: the etcd cluster at 127.0.0.1:1, 127.0.0.1:2 does not answer ("
    ), message
    assert message.endswith("; check that etcd runs and that this machine reaches it"), message
    assert "refused" in message.lower(), message  # the reason is kept
    assert message.count("does not answer") == 1, message
    assert "read-only" not in message, message  # meant for a running controller


def test_a_lower_event_limit_trims_the_backlog_from_the_oldest(open_store: Opener) -> None:
    roomy = open_store()
    for n in range(30):
        roomy.add_event(severity="info", reason="Tick", object="x", message=str(n))
    tight = open_store(max_events=5)
    last = tight.add_event(severity="info", reason="Tick", object="x", message="30")
    assert last.id == 31
    wait_for(
        "the other store sees the trimmed log",
        lambda: [e.id for e in roomy.events()] == [27, 28, 29, 30, 31],
        10,
        lambda: f"it sees {[e.id for e in roomy.events()]}",
    )


# Batches larger than one etcd transaction


def test_a_batch_above_etcds_operation_limit_is_saved_whole(
    open_store: Opener, etcd: EtcdCluster
) -> None:
    store = open_store()
    client = etcd.client()
    try:
        store.fence(take_leader_key(client, store.leader_key))
        nodes = [f"edge-{n:03d}" for n in range(300)]
        saved = store.save_assignment(dict.fromkeys(nodes, "v1"))
        assert saved == {node: n + 1 for n, node in enumerate(nodes)}
        assert store.last_generation() == 300
        assert store.save_assignment(dict.fromkeys(nodes, "v1")) == {}
    finally:
        client.close()


def test_a_batch_cut_between_parts_keeps_each_node_whole(
    open_store: Opener, etcd: EtcdCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_store()
    client = etcd.client()
    parts: list[int] = []
    decide_part = plans.save_assignment

    def lose_the_lead_before_the_second(s: Snapshot, *args: object) -> Decision[dict[str, int]]:
        parts.append(len(parts) + 1)
        if len(parts) == 2:
            client.txn([], [Op.delete(store.leader_key)])  # the lease runs out mid-batch
        return decide_part(s, *args)  # type: ignore[arg-type]

    try:
        store.fence(take_leader_key(client, store.leader_key))
        monkeypatch.setattr(plans, "save_assignment", lose_the_lead_before_the_second)
        nodes = [f"edge-{n:03d}" for n in range(300)]
        with pytest.raises(NotLeader):
            store.save_assignment(dict.fromkeys(nodes, "v1"))
        saved = store.assignment()
        assert 0 < len(saved) < 300
        assert sorted(saved) == nodes[: len(saved)]  # the first part, in node order
        assert all(row.desired_json == "v1" for row in saved.values())
        assert store.last_generation() == max(row.generation for row in saved.values())
    finally:
        client.close()


def test_a_batch_with_forced_nodes_is_numbered_in_node_order_across_parts(
    open_store: Opener,
) -> None:
    store = open_store()
    nodes = [f"edge-{n:03d}" for n in range(300)]
    store.save_assignment(dict.fromkeys(nodes, "v1"))
    changed = {node: ("v2" if n % 2 else "v1") for n, node in enumerate(nodes)}
    unchanged = [node for node, state in changed.items() if state == "v1"]
    saved = store.save_assignment(changed, force=unchanged)
    assert saved == {node: 301 + n for n, node in enumerate(nodes)}
    assert store.save_assignment(changed) == {}


def test_revoking_more_certificates_than_one_transaction_holds(open_store: Opener) -> None:
    store = open_store()
    for serial in range(1, 301):
        store.add_certificate(serial, "admin/alice" if serial <= 250 else "edge-1", 2e9)
    assert store.revoke_certificates("admin/alice") == 250
    assert store.revoke_certificates("admin/alice") == 0
    assert all(row.revoked_at is not None for row in store.certificates("admin/"))
    assert store.revoke_node("edge-1", "stolen") == 50
    assert store.revoked_nodes() == {"edge-1": "stolen"}
    assert store.live_certificate_until("edge-1") is None
