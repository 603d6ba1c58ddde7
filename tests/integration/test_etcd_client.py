"""EtcdClient against a real etcd: reads, transactions, leases, watches, failover."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import pytest

from edgefleet_common.ports import free_port
from orchestrator.etcd.client import EtcdClient, WatchBatch
from orchestrator.etcd.errors import EtcdCompacted, EtcdError, EtcdUnavailable
from orchestrator.etcd.target import EtcdTarget
from orchestrator.etcd.txn import Compare, Op
from tests.polling import wait_for

if TYPE_CHECKING:
    from tests.etcd_server import EtcdCluster

pytestmark = pytest.mark.slow


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> bytes:
    """A key prefix of this test's own on the shared etcd."""
    return f"/test/{request.node.name}/".encode()


def test_put_get_and_prefix_reads_sorted_by_key(etcd_client: EtcdClient, prefix: bytes) -> None:
    assert etcd_client.get(prefix + b"none") is None
    first = etcd_client.put(prefix + b"b", b"2")
    second = etcd_client.put(prefix + b"a", b"1")
    etcd_client.put(prefix[:-1] + b"x", b"outside the prefix")
    kv = etcd_client.get(prefix + b"b")
    assert kv is not None
    assert (kv.value, kv.create_revision, kv.mod_revision, kv.version) == (b"2", first, first, 1)
    keys, revision = etcd_client.get_prefix(prefix)
    assert [(k.key, k.value) for k in keys] == [(prefix + b"a", b"1"), (prefix + b"b", b"2")]
    assert revision > second


def test_txn_compares_decide_the_branch(etcd_client: EtcdClient, prefix: bytes) -> None:
    key = prefix + b"k"
    created = etcd_client.txn(
        [Compare.create_revision(key, "=", 0)], [Op.put(key, b"v1")], [Op.get(key)]
    )
    assert created.succeeded
    assert created.gets == []
    again = etcd_client.txn(
        [Compare.create_revision(key, "=", 0)], [Op.put(key, b"v2")], [Op.get(key)]
    )
    assert not again.succeeded
    assert [kv.value for kv in again.gets[0]] == [b"v1"]
    stale = etcd_client.txn(
        [Compare.mod_revision(key, "=", created.revision - 1)], [Op.delete(key)]
    )
    assert not stale.succeeded
    fresh = etcd_client.txn(
        [Compare.mod_revision(key, "=", created.revision), Compare.value(key, "=", b"v1")],
        [Op.put(key, b"v3"), Op.get(key), Op.get(prefix + b"absent")],
    )
    assert fresh.succeeded
    assert [kv.value for kv in fresh.gets[0]] == [b"v3"]
    assert fresh.gets[1] == []
    newer = etcd_client.txn([Compare.mod_revision(key, ">", created.revision)], [])
    assert newer.succeeded
    assert etcd_client.txn([Compare.value(key, "!=", b"v3")], []).succeeded is False


def test_changed_since_tells_whether_a_prefix_changed(
    etcd_client: EtcdClient, prefix: bytes
) -> None:
    first = etcd_client.put(prefix + b"a", b"1")
    etcd_client.put(prefix + b"b", b"1")
    outside = etcd_client.put(prefix[:-1] + b"-other", b"x")
    assert etcd_client.changed_since(prefix, first) == ([prefix + b"b"], 2, outside)
    written, count, now = etcd_client.changed_since(prefix, outside)
    assert (written, count, now) == ([], 2, outside)
    deleted = etcd_client.txn([], [Op.delete(prefix + b"a")]).revision
    assert etcd_client.changed_since(prefix, outside) == ([], 1, deleted), "a delete shows"


def test_delete_prefix_removes_only_the_prefix(etcd_client: EtcdClient, prefix: bytes) -> None:
    for name in (b"a", b"b/c", b"d"):
        etcd_client.put(prefix + name, b"x")
    etcd_client.put(prefix[:-1] + b"-sibling", b"kept")
    etcd_client.txn([], [Op.delete_prefix(prefix + b"b/"), Op.delete(prefix + b"d")])
    assert [kv.key for kv in etcd_client.get_prefix(prefix)[0]] == [prefix + b"a"]
    etcd_client.txn([], [Op.delete_prefix(prefix)])
    assert etcd_client.get_prefix(prefix)[0] == []
    assert etcd_client.get(prefix[:-1] + b"-sibling") is not None


def test_a_lease_keeps_its_keys_until_revoked(etcd_client: EtcdClient, prefix: bytes) -> None:
    lease = etcd_client.lease_grant(5)
    etcd_client.put(prefix + b"owned", b"x", lease=lease)
    kv = etcd_client.get(prefix + b"owned")
    assert kv is not None
    assert kv.lease == lease
    assert 0 < etcd_client.lease_keepalive(lease) <= 5
    etcd_client.lease_revoke(lease)
    assert etcd_client.get(prefix + b"owned") is None
    assert etcd_client.lease_keepalive(lease) == 0
    etcd_client.lease_revoke(lease)  # already gone: nothing to do


def test_a_lease_not_kept_alive_expires_with_its_keys(
    etcd_client: EtcdClient, prefix: bytes
) -> None:
    lease = etcd_client.lease_grant(2)
    etcd_client.put(prefix + b"owned", b"x", lease=lease)
    wait_for(
        "the key of an expired lease to go",
        lambda: etcd_client.get(prefix + b"owned") is None,
        timeout=15,
        explain=lambda: f"key: {etcd_client.get(prefix + b'owned')}",
    )
    assert etcd_client.lease_keepalive(lease) == 0


def _collect(
    client: EtcdClient, prefix: bytes, start: int, stop: threading.Event
) -> tuple[list[WatchBatch], list[BaseException], threading.Thread]:
    batches: list[WatchBatch] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with client.watch_prefix(prefix, start, stop) as stream:
                batches.extend(stream)
        except EtcdError as error:
            errors.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return batches, errors, thread


def test_watch_delivers_puts_and_deletes_in_order(etcd_client: EtcdClient, prefix: bytes) -> None:
    start = etcd_client.put(prefix + b"before", b"0")
    stop = threading.Event()
    batches, errors, thread = _collect(etcd_client, prefix, start + 1, stop)
    put = etcd_client.put(prefix + b"a", b"1")
    etcd_client.put(prefix[:-1] + b"-other", b"not watched")
    deleted = etcd_client.txn([], [Op.delete(prefix + b"a"), Op.delete(prefix + b"before")])

    def events() -> list[tuple[str, bytes, bytes, int]]:
        return [(k, kv.key, kv.value, kv.mod_revision) for b in list(batches) for k, kv in b.events]

    expected = [
        ("put", prefix + b"a", b"1", put),
        ("delete", prefix + b"a", b"", deleted.revision),
        ("delete", prefix + b"before", b"", deleted.revision),
    ]
    wait_for("three watch events", lambda: len(events()) >= 3, 10, lambda: f"{events()} {errors}")
    assert events() == expected
    assert batches[-1].revision == deleted.revision
    stop.set()
    thread.join(5)
    assert not thread.is_alive()
    assert errors == []


def test_watch_from_a_compacted_revision_says_so(etcd_client: EtcdClient, prefix: bytes) -> None:
    old = etcd_client.put(prefix + b"k", b"1")
    latest = etcd_client.put(prefix + b"k", b"2")
    etcd_client.compact(latest)
    stop = threading.Event()
    with pytest.raises(EtcdCompacted) as caught:
        for _ in etcd_client.watch_prefix(prefix, old, stop):
            pass
    assert caught.value.compact_revision == latest
    stop.set()


def test_a_stopped_member_is_skipped_and_a_lost_quorum_is_reported(
    etcd_cluster: EtcdCluster,
) -> None:
    cluster = etcd_cluster
    client = cluster.client(timeout=2.0)
    try:
        client.put(b"k", b"1")
        cluster.members[0].stop()
        assert client.put(b"k", b"2") > 0
        status = client.status()
        assert (status.reachable, status.members) == (2, 3)
        assert status.unreachable == (cluster.members[0].endpoint,)
        cluster.members[1].stop()
        with pytest.raises(EtcdUnavailable, match="does not answer") as caught:
            client.get(b"k")
        for endpoint in cluster.endpoints:
            assert endpoint in str(caught.value)
        cluster.members[1].start()
        cluster.wait_ready()
        kv = client.get(b"k")
        assert kv is not None
    finally:
        client.close()


def test_no_member_at_all_is_unavailable_and_a_closed_client_says_so() -> None:
    client = EtcdClient(EtcdTarget((f"127.0.0.1:{free_port()}",)), timeout=1.0)
    with pytest.raises(EtcdUnavailable, match="does not answer"):
        client.put(b"k", b"v")
    with pytest.raises(EtcdUnavailable):
        client.status()
    client.close()
    with pytest.raises(EtcdUnavailable, match="closed"):
        client.get(b"k")


def test_a_refused_request_is_an_error_not_an_outage(etcd_client: EtcdClient) -> None:
    with pytest.raises(EtcdError, match="refused") as caught:
        etcd_client.put(b"", b"empty keys are not allowed")
    assert not isinstance(caught.value, EtcdUnavailable)
