"""Real faults on a real fleet: three edge-nodes in network namespaces, found over mDNS,
serving steady traffic through the gateway while one of them is killed, cut off,
made lossy or starved of bandwidth.

After each fault: the agent is back to its desired count on healthy nodes, every
request that could be retried succeeded (a stream cut mid-answer cannot be, and
is counted and reported), the healed node runs no duplicate of what moved away,
and work returns to its preferred node (failback is on in the manifest).

The tests share one fleet and run in file order; each starts by waiting for the
steady state (the agent ready on its preferred nodes n1 and n2).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.e2e.lab_fleet import (
    LabFleet,
    Outcome,
    Traffic,
    failures,
    lab_fleet,
)
from tests.integration.test_node_daemon import require_model
from tests.netlab import Lab, lab_available
from tests.polling import wait_for

pytestmark = [pytest.mark.netns, pytest.mark.slow, pytest.mark.model]

PREFERRED = {"n1", "n2"}
PARTITION_S = 30.0


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabFleet]:
    reason = lab_available()
    if reason is not None:
        pytest.skip(reason)
    require_model()
    with Lab() as lab, lab_fleet(lab, tmp_path_factory.mktemp("faults")) as built:
        yield built


@pytest.fixture
def steady(fleet: LabFleet) -> LabFleet:
    """The fleet back in its steady state before a fault."""
    wait_for(
        "the agent on its preferred nodes",
        lambda: fleet.ready_on() == PREFERRED,
        90,
        fleet.explain,
    )
    return fleet


def settle(traffic: Traffic, fleet: LabFleet, count: int = 4) -> None:
    """Wait until `count` more requests succeeded (traffic flows before a fault)."""
    before = sum(o.ok for o in traffic.snapshot())
    wait_for(
        f"{count} requests served",
        lambda: sum(o.ok for o in traffic.snapshot()) >= before + count,
        60,
        lambda: f"{traffic.snapshot()[-5:]}\n{fleet.explain()}",
    )


def summary(outcomes: list[Outcome]) -> str:
    """Counts by who served, and every failure."""
    served: dict[str, int] = {}
    for outcome in outcomes:
        served[outcome.node or "failed"] = served.get(outcome.node or "failed", 0) + 1
    start = outcomes[0].started if outcomes else 0.0
    failed = [f"  {o.kind} at +{o.started - start:.1f}s: {o.error}" for o in outcomes if not o.ok]
    return f"{len(outcomes)} requests, served by {served}\n" + "\n".join(failed)


def assert_served(outcomes: list[Outcome], fleet: LabFleet) -> None:
    """Every retriable request succeeded; cut streams are reported, not hidden."""
    retriable, cut = failures(outcomes)
    report = summary(outcomes)
    print(f"\n{report}\ncut mid-stream (not retriable): {len(cut)}")
    assert outcomes, "no traffic was sent"
    assert not retriable, f"retriable requests failed:\n{report}\n{fleet.explain()}"
    assert len(cut) <= 1, f"more than the one stream in flight was cut:\n{report}"


@pytest.mark.timeout(300)
def test_a_killed_node_fails_over_and_work_returns_when_it_restarts(steady: LabFleet) -> None:
    fleet = steady
    with Traffic(fleet.controller.gateway_url) as traffic:
        settle(traffic, fleet)
        killed_at = time.monotonic()
        fleet.kill("n1")
        wait_for(
            "n1 not-ready",
            lambda: fleet.node_states().get("n1") in ("suspect", "not-ready"),
            10,
            fleet.explain,
        )
        wait_for(
            "the agent back to 2 replicas on healthy nodes",
            lambda: fleet.ready_on() == {"n2", "n3"},
            30,
            fleet.explain,
        )
        recovered = time.monotonic() - killed_at
        settle(traffic, fleet)
        fleet.start_node("n1")
        wait_for(
            "failback: the agent back on n1 and gone from n3",
            lambda: fleet.ready_on() == PREFERRED and fleet.reported_holders() == PREFERRED,
            90,
            fleet.explain,
        )
        settle(traffic, fleet)
    outcomes = traffic.stop()
    print(f"\nSIGKILL: recovered 2 replicas {recovered:.1f}s after the kill")
    assert_served(outcomes, fleet)
    assert any(o.node == "n3" for o in outcomes), "n3 never served the failed-over agent"


@pytest.mark.timeout(300)
def test_a_cut_off_node_fails_over_and_heals_without_duplicates(steady: LabFleet) -> None:
    fleet = steady
    host = fleet.hosts["n2"]
    with Traffic(fleet.controller.gateway_url) as traffic:
        settle(traffic, fleet)
        cut_at = time.monotonic()
        host.link_down()
        try:
            wait_for(
                "n2 not-ready",
                lambda: fleet.node_states().get("n2") == "not-ready",
                15,
                fleet.explain,
            )
            wait_for(
                "the agent back to 2 replicas on n1 and n3",
                lambda: fleet.ready_on() == {"n1", "n3"},
                30,
                fleet.explain,
            )
            # The nodes that can be reached run it themselves; n2's own copy is out of reach.
            assert fleet.reported_holders(["n1", "n3"]) == {"n1", "n3"}
            time.sleep(max(0.0, PARTITION_S - (time.monotonic() - cut_at)))
        finally:
            host.link_up()
        wait_for(
            "n2 ready again",
            lambda: fleet.node_states().get("n2") == "ready",
            30,
            fleet.explain,
        )
        wait_for(
            "failback without duplicates: the agent on n1 and n2 only, as the nodes report",
            lambda: fleet.ready_on() == PREFERRED and fleet.reported_holders() == PREFERRED,
            90,
            fleet.explain,
        )
        settle(traffic, fleet)
    assert_served(traffic.stop(), fleet)


@pytest.mark.timeout(300)
def test_a_lossy_link_and_a_bandwidth_cap_lose_no_request(steady: LabFleet) -> None:
    fleet = steady
    host = fleet.hosts["n1"]
    with Traffic(fleet.controller.gateway_url) as traffic:
        settle(traffic, fleet)
        host.packet_loss(10)
        try:
            settle(traffic, fleet, count=20)
        finally:
            host.clear_loss()
        host.bandwidth(256_000)
        try:
            settle(traffic, fleet, count=20)
        finally:
            host.clear_bandwidth()
        settle(traffic, fleet)
    outcomes = traffic.stop()
    assert_served(outcomes, fleet)
    wait_for(
        "the agent on its preferred nodes after the faults",
        lambda: fleet.ready_on() == PREFERRED and fleet.reported_holders() == PREFERRED,
        60,
        fleet.explain,
    )
