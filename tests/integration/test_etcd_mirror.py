"""PrefixMirror against a real etcd: it follows changes and survives an etcd restart."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

import pytest

from orchestrator.etcd.client import EtcdClient, WatchStream
from orchestrator.etcd.errors import EtcdUnavailable
from orchestrator.etcd.mirror import PrefixMirror
from orchestrator.etcd.target import EtcdTarget
from orchestrator.etcd.txn import Op
from tests.polling import wait_for

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.etcd_server import EtcdCluster

pytestmark = pytest.mark.slow

PREFIX = b"/mirror/"


class Changes:
    """What on_change reported, for assertions from the test thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.keys: list[bytes] = []

    def __call__(self, keys: list[bytes]) -> None:
        with self.lock:
            self.keys.extend(keys)

    def seen(self) -> set[bytes]:
        with self.lock:
            return set(self.keys)


@pytest.fixture
def mirror_of(etcd_fresh: EtcdCluster) -> Iterator[tuple[EtcdClient, PrefixMirror, Changes]]:
    """A client writing to a fresh etcd and a started mirror of PREFIX on another client."""
    writer = etcd_fresh.client()
    reader = etcd_fresh.client(timeout=1.0)
    writer.put(PREFIX + b"a", b"1")
    writer.put(b"/elsewhere", b"x")
    changes = Changes()
    mirror = PrefixMirror(reader, PREFIX, on_change=changes)
    mirror.start()
    yield writer, mirror, changes
    mirror.close()
    reader.close()
    writer.close()


def _explain(mirror: PrefixMirror) -> str:
    items = [(kv.key, kv.value) for kv in mirror.items()]
    return f"healthy={mirror.healthy} revision={mirror.revision} items={items}"


def test_the_mirror_follows_puts_and_deletes(
    mirror_of: tuple[EtcdClient, PrefixMirror, Changes],
) -> None:
    writer, mirror, changes = mirror_of
    assert [(kv.key, kv.value) for kv in mirror.items()] == [(PREFIX + b"a", b"1")]
    wait_for("the mirror to be healthy", lambda: mirror.healthy, 10, lambda: _explain(mirror))
    revision = writer.put(PREFIX + b"sub/b", b"2")
    assert mirror.wait_for(revision, timeout=10), _explain(mirror)
    kv = mirror.get(PREFIX + b"sub/b")
    assert kv is not None
    assert (kv.value, kv.mod_revision) == (b"2", revision)
    assert [kv.key for kv in mirror.items(b"sub/")] == [PREFIX + b"sub/b"]
    deleted = writer.txn([], [Op.delete(PREFIX + b"a")]).revision
    assert mirror.wait_for(deleted, timeout=10), _explain(mirror)
    assert mirror.get(PREFIX + b"a") is None
    assert mirror.get(b"/elsewhere") is None
    assert {PREFIX + b"a", PREFIX + b"sub/b"} <= changes.seen()


def test_wait_for_reaches_a_revision_written_outside_the_prefix(
    mirror_of: tuple[EtcdClient, PrefixMirror, Changes],
) -> None:
    writer, mirror, _ = mirror_of
    outside = writer.put(b"/elsewhere", b"y")
    assert mirror.wait_for(outside, timeout=10), _explain(mirror)
    assert mirror.revision >= outside
    assert not mirror.wait_for(outside + 100, timeout=0.5)


def test_the_mirror_survives_an_etcd_restart(
    etcd_fresh: EtcdCluster, mirror_of: tuple[EtcdClient, PrefixMirror, Changes]
) -> None:
    writer, mirror, changes = mirror_of
    wait_for("the mirror to be healthy", lambda: mirror.healthy, 10, lambda: _explain(mirror))
    etcd_fresh.members[0].stop()
    wait_for("the mirror to notice the outage", lambda: not mirror.healthy, 10, lambda: "")
    assert [kv.key for kv in mirror.items()] == [PREFIX + b"a"], "reads serve the last data"
    etcd_fresh.members[0].start()
    etcd_fresh.wait_ready()
    revision = writer.put(PREFIX + b"after", b"3")
    assert mirror.wait_for(revision, timeout=15), _explain(mirror) + "\n" + etcd_fresh.logs()
    wait_for("the mirror to be healthy again", lambda: mirror.healthy, 15, lambda: _explain(mirror))
    assert [kv.key for kv in mirror.items()] == [PREFIX + b"a", PREFIX + b"after"]
    assert PREFIX + b"after" in changes.seen()


class GatedClient(EtcdClient):
    """A real client whose watches wait for the test to open the gate."""

    def __init__(self, target: EtcdTarget) -> None:
        super().__init__(target)
        self.gate = threading.Event()

    def watch_prefix(
        self, prefix: bytes, start_revision: int, stop: threading.Event
    ) -> WatchStream:
        self.gate.wait(30)
        return super().watch_prefix(prefix, start_revision, stop)


def test_the_mirror_reads_everything_again_after_a_compaction(
    etcd: EtcdCluster, caplog: pytest.LogCaptureFixture
) -> None:
    prefix = b"/compacted/"
    writer = etcd.client()
    writer.put(prefix + b"a", b"1")
    reader = GatedClient(etcd.target())
    changes = Changes()
    mirror = PrefixMirror(reader, prefix, on_change=changes)
    caplog.set_level(logging.INFO, logger="orchestrator.etcd.mirror")
    try:
        mirror.start()  # read at revision R; the watch from R + 1 waits at the gate
        writer.txn([], [Op.delete(prefix + b"a"), Op.put(prefix + b"new", b"4")])
        latest = writer.put(prefix + b"new", b"5")
        writer.compact(latest)
        reader.gate.set()
        assert mirror.wait_for(latest, timeout=15), _explain(mirror)
        assert [(kv.key, kv.value) for kv in mirror.items()] == [(prefix + b"new", b"5")]
        assert {prefix + b"a", prefix + b"new"} <= changes.seen()
        assert "reads everything again" in caplog.text
        wait_for("the mirror to be healthy", lambda: mirror.healthy, 10, lambda: _explain(mirror))
    finally:
        mirror.close()
        reader.close()
        writer.close()


def test_start_says_when_etcd_does_not_answer() -> None:
    from edgefleet_common.ports import free_port

    client = EtcdClient(EtcdTarget((f"127.0.0.1:{free_port()}",)), timeout=0.5)
    mirror = PrefixMirror(client, PREFIX)
    with pytest.raises(EtcdUnavailable, match="does not answer"):
        mirror.start(timeout=1.0)
    client.close()
