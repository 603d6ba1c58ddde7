"""A control plane that survives its own machines: three controllers on a 3-member etcd
cluster, three edge-nodes, each in its own network namespace, steady traffic with the
official `openai` client through n3's gateway (n3 hosts no replica of the agent).

The leader is SIGKILLed, then a node that hosts a replica; the leader is cut from etcd
(but not from the nodes) and its replayed push is refused by a node; two applies reach
two controllers at once; etcd loses its quorum and gets it back. What runs is read from
the nodes themselves (their status: agents, request counters, leader term, refused
pushes; their llama.cpp server processes). Figures are printed, never asserted; every
wait is a bounded poll.

The fleet tests share one lab and run in file order; each starts from the steady state.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from tests.e2e.control_plane import (
    PREFERRED,
    RESTART_REASONS,
    Fingerprint,
    fingerprints,
    holders,
    routes_current,
    wait_key_in_force,
)
from tests.e2e.etcd_lab import etcd_available, lab_etcd
from tests.e2e.ha_fleet import CONTROLLERS, LEASE_TTL_S, HaFleet, ha_fleet
from tests.e2e.lab_fleet import MANIFEST, NODES
from tests.e2e.test_control_plane_loss import assert_none_failed, through
from tests.e2e.test_failover_faults import assert_served, settle
from tests.integration.test_node_daemon import require_model
from tests.netlab import Lab, lab_available
from tests.polling import wait_for

pytestmark = [pytest.mark.netns, pytest.mark.slow]

# Two inert edits (the controller's failure timeout): new revisions that move nothing.
EDITED = {
    name: MANIFEST.replace("failure_timeout: 3s", f"failure_timeout: {seconds}s")
    for name, seconds in (("four", 4), ("five", 5))
}
assert all(text != MANIFEST for text in EDITED.values()), "the manifest changed shape"


# -- etcd on its own -----------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_an_etcd_cluster_refuses_writes_without_quorum_and_recovers(
    lab: Lab, tmp_path: Path
) -> None:
    reason = etcd_available()
    if reason is not None:
        pytest.skip(reason)
    with lab_etcd(lab, tmp_path) as etcd:
        assert etcd.can_write("/lab/before", "1"), etcd.explain()
        etcd.stop("e1")
        etcd.stop("e2", signal.SIGTERM)
        assert not etcd.can_write("/lab/during", "2"), "a write succeeded without quorum"
        assert not etcd.healthy("e3"), "the last member says it is healthy alone"
        etcd.start("e1")
        etcd.start("e2")
        took = etcd.wait_healthy()
        print(f"\netcd healthy again {took:.1f}s after two members restarted")
        assert etcd.can_write("/lab/after", "3"), etcd.explain()
        # The write that timed out without quorum may still be committed once the quorum is
        # back (etcd keeps the proposal): only the others are certain.
        for key, value in (("/lab/before", "1"), ("/lab/after", "3")):
            got = etcd.etcdctl("get", key, "--print-value-only").stdout.split()
            assert got == [value], f"{key}: {got}"
        members = etcd.etcdctl("member", "list").stdout.splitlines()
        assert len([m for m in members if ", started, " in m]) == 3, members


# -- the fleet -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HaFleet]:
    for reason in (lab_available(), etcd_available()):
        if reason is not None:
            pytest.skip(reason)
    require_model()
    tmp = tmp_path_factory.mktemp("ha")
    with Lab() as lab, lab_etcd(lab, tmp) as etcd, ha_fleet(lab, tmp, etcd) as built:
        yield built


@pytest.fixture(scope="module")
def key(fleet: HaFleet) -> str:
    """An API key, in force on every node's gateway."""
    made = fleet.api_key()
    wait_key_in_force(fleet, made)
    return made


@pytest.fixture
def steady(fleet: HaFleet, key: str) -> HaFleet:
    """Every etcd member and controller up, no cut, one leader in focus, the agent on its
    preferred nodes, every node on the current table."""
    etcd = fleet.etcd
    # What an earlier test may have left broken when it failed halfway.
    fleet.heal()
    stopped = [name for name, member in etcd.members.items() if not member.running]
    for name in stopped:
        etcd.start(name)
    etcd.wait_healthy()
    for name in set(CONTROLLERS) - set(fleet.alive()):
        fleet.start_controller(name)
    for name in set(NODES) - set(fleet.nodes):
        fleet.start_node(name)
    fleet.wait_leader()
    wait_for(
        "the agent on its preferred nodes, as the leader and the nodes report",
        lambda: fleet.ready_on() == PREFERRED and holders(fleet) == PREFERRED,
        120,
        fleet.explain,
    )
    wait_for("every node on the current table", lambda: routes_current(fleet), 60, fleet.explain)
    return fleet


def assert_unchanged(before: dict[str, Fingerprint], fleet: HaFleet) -> None:
    """No node restarted its model servers or its agents (their counters never go back)."""
    after = fingerprints(fleet)
    for name, (servers, counters) in before.items():
        now_servers, now_counters = after[name]
        assert now_servers == servers, f"{name} restarted its model: {servers} → {now_servers}"
        assert set(now_counters) == set(counters), f"{name}: agents {counters} → {now_counters}"
        restarted = {a: n for a, n in now_counters.items() if n < counters[a]}
        assert not restarted, f"{name} restarted agents (counters went back): {restarted}"


def assert_in_place(fleet: HaFleet) -> None:
    """The agent on its preferred nodes, as the leader and the nodes themselves say."""
    assert fleet.ready_on() == PREFERRED, fleet.explain()
    assert holders(fleet) == PREFERRED, fleet.explain()


def churn(fleet: HaFleet, after_event: int) -> list[str]:
    """Events since `after_event` that started, stopped or replaced work."""
    return [
        f"  {e.reason} {e.node_id}: {e.message}"
        for e in fleet.events(after_event)
        if e.reason in RESTART_REASONS
    ]


@pytest.mark.model
@pytest.mark.timeout(300)
def test_a_killed_leader_is_replaced_without_a_failed_request_or_a_restart(
    steady: HaFleet, key: str
) -> None:
    fleet = steady
    old = fleet.focus
    old_term = fleet.term(old)
    with through(fleet, key) as traffic:
        settle(traffic, fleet)
        before = fingerprints(fleet)
        last_event = fleet.last_event_id()
        killed_at = time.monotonic()
        fleet.kill_controller(old)
        to_leader = fleet.wait_leader(timeout=30, exclude=(old,))
        new_term = fleet.term(fleet.focus)
        wait_for(
            "the new leader sees the fleet as it was",
            lambda: fleet.ready_on() == PREFERRED and routes_current(fleet),
            60,
            fleet.explain,
        )
        reconciled = time.monotonic() - killed_at
        settle(traffic, fleet, count=12)
    outcomes = traffic.stop()
    print(
        f"\nleader {old} (term {old_term}) killed: {fleet.focus} leads (term {new_term}) "
        f"{to_leader:.1f}s later (lease TTL {LEASE_TTL_S}s); reconciled after "
        f"{reconciled:.1f}s"
    )
    assert new_term > old_term, f"the new leader's term {new_term} is not above {old_term}"
    assert_none_failed(outcomes, fleet)
    assert_unchanged(before, fleet)
    assert holders(fleet) == PREFERRED, "the agent is placed twice or lost"
    moved = churn(fleet, last_event)
    assert not moved, "the takeover started or stopped work:\n" + "\n".join(moved)
    fleet.start_controller(old)
    wait_for(
        f"{old} back as a standby of term {new_term}",
        lambda: (
            (view := fleet.control_plane(old)) is not None
            and view.role == "standby"
            and view.term == new_term
        ),
        30,
        fleet.explain,
    )


@pytest.mark.model
@pytest.mark.timeout(300)
def test_the_new_leader_fails_over_a_killed_node(steady: HaFleet, key: str) -> None:
    fleet = steady
    with through(fleet, key) as traffic:
        settle(traffic, fleet)
        killed_at = time.monotonic()
        fleet.kill("n1")
        detected = wait_for(
            "n1 not ready, as the leader sees it",
            lambda: fleet.node_states().get("n1") in ("suspect", "not-ready"),
            30,
            fleet.explain,
        )
        wait_for(
            "the agent back to 2 replicas on n2 and n3",
            lambda: fleet.ready_on() == {"n2", "n3"},
            60,
            fleet.explain,
        )
        recovered = time.monotonic() - killed_at
        assert fleet.reported_holders(["n2", "n3"]) == {"n2", "n3"}, fleet.explain()
        settle(traffic, fleet)
        fleet.start_node("n1")
        wait_for(
            "failback: the agent back on n1 and gone from n3",
            lambda: fleet.ready_on() == PREFERRED and fleet.reported_holders() == PREFERRED,
            120,
            fleet.explain,
        )
        settle(traffic, fleet)
    outcomes = traffic.stop()
    print(
        f"\nn1 killed under leader {fleet.focus}: seen down after {detected:.1f}s, "
        f"2 replicas again after {recovered:.1f}s"
    )
    assert_served(outcomes, fleet)


@pytest.mark.model
@pytest.mark.timeout(300)
def test_a_leader_cut_from_etcd_stops_and_its_stale_push_is_refused(steady: HaFleet) -> None:
    fleet = steady
    old = fleet.focus
    old_term = fleet.term(old)
    refused = {n: fleet.node_status(n).refused_pushes for n in NODES}
    fleet.partition_from_etcd(old)
    try:
        cut_at = time.monotonic()
        stopped = fleet.wait_stepped_down(old, LEASE_TTL_S + 10)
        fleet.wait_leader(timeout=30, exclude=(old,))
        replaced = time.monotonic() - cut_at
        new_term = fleet.term(fleet.focus)
        assert new_term > old_term, f"the new leader's term {new_term} is not above {old_term}"
        wait_for(
            f"every node has seen term {new_term}",
            lambda: all(fleet.node_status(n).leader_term >= new_term for n in NODES),
            30,
            fleet.explain,
        )
        print(
            f"\n{old} cut from etcd: stopped leading {stopped[0]:.1f}-{stopped[1]:.1f}s later, "
            f"{fleet.focus} leads (term {new_term}) after {replaced:.1f}s; "
            f"{old} says {fleet.said(old)}"
        )
        with pytest.raises(grpc.RpcError) as raised:
            fleet.replay_push(old, "n2", old_term)
        error = raised.value
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error
        assert str(old_term) in (error.details() or ""), error.details()
        assert str(new_term) in (error.details() or ""), error.details()
        now = {n: fleet.node_status(n).refused_pushes for n in NODES}
        # Only the replayed push was refused: the cut-off leader itself pushed nothing stale.
        assert now == {**refused, "n2": refused["n2"] + 1}, f"refused pushes {refused} → {now}"
        assert_in_place(fleet)
    finally:
        fleet.heal()
    wait_for(
        f"{old} back as a standby of term {new_term}",
        lambda: (
            (view := fleet.control_plane(old)) is not None
            and view.role == "standby"
            and view.term == new_term
        ),
        30,
        fleet.explain,
    )


@pytest.mark.model
@pytest.mark.timeout(200)
def test_two_applies_at_once_on_two_controllers_are_both_recorded_in_order(
    steady: HaFleet, tmp_path: Path
) -> None:
    fleet = steady
    leader = fleet.focus
    standby = next(n for n in fleet.alive() if n != leader)
    files = {}
    for name, text in EDITED.items():
        files[name] = tmp_path / f"{name}.yaml"
        files[name].write_text(text)
    before = fleet.revisions()
    last = before[-1].number if before else 0
    with ThreadPoolExecutor(2) as pool:
        runs = [
            pool.submit(fleet.edgectl, leader, "apply", "-f", str(files["four"])),
            pool.submit(fleet.edgectl, standby, "apply", "-f", str(files["five"])),
        ]
        for run in runs:
            run.result()  # each asserts exit 0
    after = fleet.revisions()
    added = after[len(before) :]
    print(
        f"\napplied on {leader} and {standby} at once: revisions "
        + ", ".join(f"{r.number} ({Path(r.source).name})" for r in added)
    )
    assert [r.number for r in after[: len(before)]] == [r.number for r in before], after
    assert [r.number for r in added] == [last + 1, last + 2], f"revisions {after}"
    assert {r.manifest for r in added} == set(EDITED.values()), "an apply was lost"
    wait_for(
        f"{standby} lists the same revisions",
        lambda: [r.number for r in fleet.revisions(standby)] == [r.number for r in after],
        10,
        fleet.explain,
    )
    assert_in_place(fleet)


@pytest.mark.model
@pytest.mark.timeout(300)
def test_without_etcd_quorum_the_control_plane_is_read_only_and_traffic_flows(
    steady: HaFleet, key: str, tmp_path: Path
) -> None:
    fleet = steady
    etcd = fleet.etcd
    restored = tmp_path / "restored.yaml"
    restored.write_text(MANIFEST)
    with through(fleet, key) as traffic:
        settle(traffic, fleet)
        before = fingerprints(fleet)
        revisions = len(fleet.revisions())
        assert all(v.writable for v in fleet.views().values()), fleet.explain()
        etcd.stop("e1")
        etcd.stop("e2")
        read_only = wait_for(
            "every controller says the store is read-only",
            lambda: (
                all(not v.writable for v in fleet.views().values())
                and len(fleet.views()) == len(CONTROLLERS)
            ),
            30,
            fleet.explain,
        )
        views = fleet.views()
        # Cut off from the quorum, the leader stops acting within its lease.
        stepped_down = {n: fleet.wait_stepped_down(n, LEASE_TTL_S + 10) for n in fleet.alive()}
        shown = fleet.edgectl(fleet.focus, "status").stdout
        refused = fleet.edgectl(fleet.focus, "apply", "-f", str(restored), check=False)
        said = refused.stdout + refused.stderr
        settle(traffic, fleet, count=12)
        assert_unchanged(before, fleet)
        assert holders(fleet) == PREFERRED, "work moved while the store was read-only"
        etcd.start("e1")
        etcd.start("e2")
        etcd.wait_healthy()
        writable = wait_for(
            "every controller says the store is writable again",
            lambda: all(v.writable for v in fleet.views().values()),
            60,
            fleet.explain,
        )
        fleet.wait_leader()
        fleet.edgectl(fleet.focus, "apply", "-f", str(restored))
        settle(traffic, fleet)
    outcomes = traffic.stop()
    print(
        f"\nquorum lost: read-only on every controller after {read_only:.1f}s "
        f"(roles { {n: v.role for n, v in views.items()} }), no leader after "
        f"{max(b[1] for b in stepped_down.values()):.1f}s more; writable again "
        f"{writable:.1f}s after etcd recovered\napply while read-only: exit "
        f"{refused.returncode}: {said.strip()}"
    )
    assert "read-only" in shown, f"`edgectl status` does not say read-only:\n{shown}"
    assert refused.returncode != 0, f"an apply succeeded without etcd quorum:\n{said}"
    assert "read-only" in said, f"the refusal does not say the control plane is read-only:\n{said}"
    assert len(fleet.revisions()) == revisions + 1, "the apply after recovery was not recorded"
    assert_none_failed(outcomes, fleet)
