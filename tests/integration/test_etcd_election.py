"""LeaderElection against a real etcd: one leader, handover, and a leader cut off."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING

import pytest

from orchestrator.etcd.client import EtcdClient
from orchestrator.etcd.election import SAFETY_MARGIN, LeaderElection, LeaderState
from orchestrator.etcd.txn import Op
from tests.conftest import REPO
from tests.netlab import Proc
from tests.polling import wait_for

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.etcd_server import EtcdCluster

pytestmark = pytest.mark.slow

TTL = 3


class Seen:
    """States reported to on_change, and the thread that reported them."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.states: list[LeaderState] = []
        self.threads: set[str] = set()

    def __call__(self, state: LeaderState) -> None:
        with self.lock:
            self.states.append(state)
            self.threads.add(threading.current_thread().name)


@pytest.fixture
def key(request: pytest.FixtureRequest) -> bytes:
    return f"/election/{request.node.name}/leader".encode()


@pytest.fixture
def clients(etcd: EtcdCluster) -> Iterator[list[EtcdClient]]:
    made = [etcd.client(timeout=1.0) for _ in range(2)]
    yield made
    for client in made:
        client.close()


def _describe(*elections: LeaderElection) -> str:
    return "\n".join(f"{e.state()} leading={e.leading()}" for e in elections)


def test_two_candidates_elect_exactly_one_leader_and_a_close_hands_over(
    clients: list[EtcdClient], key: bytes
) -> None:
    seen = [Seen(), Seen()]
    a, b = (
        LeaderElection(c, key, name, ttl=TTL, on_change=s)
        for c, name, s in zip(clients, (b"a", b"b"), seen, strict=True)
    )
    a.start()
    b.start()
    try:
        wait_for(
            "one leader and one follower",
            lambda: sorted(e.state().role for e in (a, b)) == ["follower", "leader"],
            10,
            lambda: _describe(a, b),
        )
        leader, follower = (a, b) if a.state().role == "leader" else (b, a)
        term = leader.leading()
        assert term > 0
        assert follower.leading() == 0
        assert follower.state().term == term
        assert follower.state().leader == leader.state().leader
        kv = clients[0].get(key)
        assert kv is not None
        assert (kv.create_revision, kv.value) == (term, leader.state().leader)
        assert leader.state().deadline > time.monotonic()
        leader.close()
        assert leader.state().role == "unknown"
        assert leader.leading() == 0
        wait_for(
            "the follower to lead after a clean handover",
            lambda: follower.leading() > term,
            5,  # revoked lease: the key goes at once, the follower sees it by its watch
            lambda: _describe(follower),
        )
    finally:
        a.close()
        b.close()
    assert all(s.threads == {"leader-election"} for s in seen), "callbacks come from the thread"
    assert any(s.role == "leader" for s in seen[0].states + seen[1].states)


def _candidate(etcd: EtcdCluster, key: bytes, identity: str) -> Proc:
    argv = [sys.executable, "-m", "tests.etcd_server", ",".join(etcd.endpoints), key.decode()]
    return Proc(
        [*argv, identity, str(TTL)],
        label=identity,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_a_killed_leader_is_replaced_with_a_higher_term(
    etcd: EtcdCluster, clients: list[EtcdClient], key: bytes
) -> None:
    process = _candidate(etcd, key, "doomed")
    try:
        term = int(process.expect(r"state leader (\d+)", timeout=20).group(1))
        seen = Seen()
        survivor = LeaderElection(clients[0], key, b"survivor", ttl=TTL, on_change=seen)
        survivor.start()
        try:
            wait_for(
                "the survivor to follow",
                lambda: survivor.state() == LeaderState("follower", term, b"doomed"),
                10,
                lambda: _describe(survivor),
            )
            process.send_signal(signal.SIGKILL)  # no revoke: etcd must expire the lease
            process.wait(10)
            wait_for(
                "the survivor to lead once the dead leader's lease expires",
                lambda: survivor.leading() > term,
                TTL * 5,
                lambda: _describe(survivor),
            )
            assert survivor.state().leader == b"survivor"
        finally:
            survivor.close()
    finally:
        if process.poll() is None:
            process.kill()
        process.reap()


def test_a_leader_cut_off_from_etcd_stops_leading_by_its_deadline(
    etcd_fresh: EtcdCluster, key: bytes
) -> None:
    client = etcd_fresh.client(timeout=0.5)
    seen = Seen()
    election = LeaderElection(client, key, b"alone", ttl=TTL, on_change=seen)
    election.start()
    try:
        wait_for("leadership", lambda: election.leading() > 0, 10, lambda: _describe(election))
        term = election.leading()
        etcd_fresh.members[0].stop()
        stopped = time.monotonic()
        deadline = election.state().deadline
        assert deadline <= stopped + TTL - SAFETY_MARGIN
        wait_for(
            "leading() to drop to 0",
            lambda: election.leading() == 0,
            TTL * 3,
            lambda: _describe(election),
        )
        wait_for(
            "the state to say etcd is unreachable",
            lambda: election.state().role == "unknown",
            TTL * 3,
            lambda: _describe(election),
        )
        etcd_fresh.members[0].start()  # etcd restores the lease: nobody else took the key
        wait_for(
            "leadership again, same term",
            lambda: election.leading() == term,
            TTL * 5,
            lambda: _describe(election) + "\n" + etcd_fresh.logs(),
        )
    finally:
        election.close()
        client.close()
    roles = [s.role for s in seen.states]
    assert roles[:3] == ["leader", "unknown", "leader"]


def test_a_deleted_leader_key_deposes_the_leader(clients: list[EtcdClient], key: bytes) -> None:
    election = LeaderElection(clients[0], key, b"a", ttl=TTL)
    election.start()
    try:
        wait_for("leadership", lambda: election.leading() > 0, 10, lambda: _describe(election))
        first = election.leading()
        clients[1].txn([], [Op.delete(key)])  # an operator's mistake, or etcd restored
        wait_for(
            "a new term after the key was deleted",
            lambda: election.leading() > first,
            TTL * 4,
            lambda: _describe(election),
        )
    finally:
        election.close()


def test_a_ttl_too_short_for_the_margin_is_refused(clients: list[EtcdClient]) -> None:
    with pytest.raises(ValueError, match="2 seconds or more"):
        LeaderElection(clients[0], b"/k", b"a", ttl=1)
