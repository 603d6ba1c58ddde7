"""Replica choice: strategies, session affinity, circuit breakers and the retry budget."""

from __future__ import annotations

from collections import Counter

from edgefleet_contract.routing import Strategy
from edgefleet_dataplane.balancer import Balancer, Replica
from edgefleet_dataplane.circuit import COOL_DOWN_S, FAILURES_TO_OPEN
from edgefleet_dataplane.retry_budget import RETRY_FLOOR, RETRY_RATIO, RetryBudget

A, B, C = Replica("edge-a"), Replica("edge-b"), Replica("edge-c")
TARGET = "assistant"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def nodes(replicas: list[Replica]) -> list[str]:
    return [r.node_id for r in replicas]


def order(
    balancer: Balancer, replicas: list[Replica], strategy: Strategy | None, user: str = ""
) -> list[Replica]:
    """One request's replicas as the router takes them: ranked, the turn taken, and the
    trial of a half-open replica at the head claimed by the request going to it."""
    ranked = balancer.rank(TARGET, replicas, strategy, user)
    balancer.advance(TARGET)
    if ranked:
        balancer.claim_trial(TARGET, ranked[0].node_id)
    return ranked


def test_round_robin_takes_each_replica_in_turn() -> None:
    balancer = Balancer()
    firsts = [order(balancer, [A, B, C], "round-robin")[0].node_id for _ in range(6)]
    assert firsts == ["edge-a", "edge-b", "edge-c"] * 2
    # The rest of the order is every other replica, for retries.
    assert sorted(nodes(order(balancer, [A, B, C], "round-robin"))) == nodes([A, B, C])


def test_least_outstanding_counts_in_flight_here_and_queued_on_the_node() -> None:
    balancer = Balancer()
    balancer.started(TARGET, "edge-a")
    balancer.started(TARGET, "edge-a")
    queued_b = Replica("edge-b", queue_depth=3)
    assert nodes(order(balancer, [A, queued_b, C], "least-outstanding")) == [
        "edge-c",
        "edge-a",
        "edge-b",
    ]
    balancer.finished(TARGET, "edge-a")
    balancer.finished(TARGET, "edge-a")
    assert order(balancer, [A, queued_b, C], "least-outstanding")[0].node_id == "edge-a"


def test_peak_ewma_prefers_the_fast_replica_and_reacts_to_a_slow_sample_at_once() -> None:
    clock = Clock()
    balancer = Balancer(clock)
    for _ in range(5):
        balancer.first_byte(TARGET, "edge-a", 20.0)
        balancer.first_byte(TARGET, "edge-b", 80.0)
    assert nodes(order(balancer, [A, B], "peak-ewma")) == ["edge-a", "edge-b"]
    balancer.first_byte(TARGET, "edge-a", 400.0)  # a peak counts in full
    assert nodes(order(balancer, [A, B], "peak-ewma")) == ["edge-b", "edge-a"]
    # Good samples bring it back gradually, as time passes.
    for _ in range(20):
        clock.now += 2.0
        balancer.first_byte(TARGET, "edge-a", 20.0)
        balancer.first_byte(TARGET, "edge-b", 80.0)
    assert order(balancer, [A, B], "peak-ewma")[0].node_id == "edge-a"


def test_peak_ewma_weighs_latency_by_outstanding_work_and_tries_unmeasured_replicas() -> None:
    balancer = Balancer(Clock())
    balancer.first_byte(TARGET, "edge-a", 20.0)
    balancer.first_byte(TARGET, "edge-b", 30.0)
    for _ in range(3):
        balancer.started(TARGET, "edge-a")
    assert nodes(order(balancer, [A, B], "peak-ewma")) == ["edge-b", "edge-a"]
    assert order(balancer, [A, B, C], "peak-ewma")[0].node_id == "edge-c"


def test_without_balancing_the_first_replica_serves_and_the_others_stand_by() -> None:
    balancer = Balancer()
    balancer.started(TARGET, "edge-a")
    assert nodes(order(balancer, [A, B], None)) == ["edge-a", "edge-b"]


def test_session_affinity_keeps_a_user_on_one_replica_and_moves_few_when_one_goes() -> None:
    balancer = Balancer()
    users = [f"user-{i}" for i in range(300)]
    placed = {u: order(balancer, [A, B, C], "round-robin", user=u)[0] for u in users}
    again = {u: order(balancer, [A, B, C], "round-robin", user=u)[0] for u in users}
    assert placed == again
    spread = Counter(r.node_id for r in placed.values())
    assert min(spread.values()) > 60, spread  # roughly even
    without_c = {u: order(balancer, [A, B], "round-robin", user=u)[0] for u in users}
    moved = [u for u in users if placed[u].node_id != without_c[u].node_id]
    assert set(moved) == {u for u in users if placed[u].node_id == "edge-c"}


def test_a_circuit_opens_after_consecutive_failures_and_half_opens_after_the_cool_down() -> None:
    clock = Clock()
    balancer = Balancer(clock)
    for _ in range(FAILURES_TO_OPEN - 1):
        balancer.failed(TARGET, "edge-a")
    assert "edge-a" in nodes(order(balancer, [A, B], "peak-ewma"))
    balancer.failed(TARGET, "edge-a")
    assert nodes(order(balancer, [A, B], "peak-ewma")) == ["edge-b"]
    stats = balancer.known(TARGET, "edge-a")
    assert stats is not None
    assert stats.circuit == "open"

    clock.now += COOL_DOWN_S
    # Half-open: exactly one trial request goes to it, first.
    assert nodes(order(balancer, [A, B], "peak-ewma")) == ["edge-a", "edge-b"]
    assert nodes(order(balancer, [A, B], "peak-ewma")) == ["edge-b"]
    balancer.failed(TARGET, "edge-a")  # the trial failed: open again
    assert nodes(order(balancer, [A, B], "peak-ewma")) == ["edge-b"]

    clock.now += COOL_DOWN_S
    assert order(balancer, [A, B], "peak-ewma")[0].node_id == "edge-a"
    balancer.first_byte(TARGET, "edge-a", 10.0)  # the trial answered: closed
    stats = balancer.known(TARGET, "edge-a")
    assert stats is not None
    assert stats.circuit == "closed"
    assert "edge-a" in nodes(order(balancer, [A, B], "peak-ewma"))


def test_a_success_resets_the_failure_count() -> None:
    balancer = Balancer(Clock())
    for _ in range(FAILURES_TO_OPEN - 1):
        balancer.failed(TARGET, "edge-a")
    balancer.first_byte(TARGET, "edge-a", 10.0)
    balancer.failed(TARGET, "edge-a")
    assert "edge-a" in nodes(order(balancer, [A], "peak-ewma"))


def test_the_retry_budget_allows_a_fraction_of_requests_and_refuses_a_storm() -> None:
    budget = RetryBudget()
    granted = 0
    for _ in range(1000):
        budget.request()
        if budget.may_retry():
            granted += 1
        if budget.may_retry():  # a second retry for the same request, when allowed
            granted += 1
    assert granted <= RETRY_FLOOR + 1 + RETRY_RATIO * 1000
    assert granted >= RETRY_RATIO * 1000 - 1


def test_a_half_open_replica_is_not_shut_out_by_a_trial_that_ended_without_a_verdict() -> None:
    clock = Clock()
    balancer = Balancer(clock)
    for _ in range(FAILURES_TO_OPEN):
        balancer.failed(TARGET, "edge-a")
    clock.now += COOL_DOWN_S
    assert order(balancer, [A, B], "peak-ewma")[0].node_id == "edge-a"
    balancer.started(TARGET, "edge-a")
    balancer.finished(TARGET, "edge-a")  # refused (e.g. queue full) or cancelled
    assert order(balancer, [A, B], "peak-ewma")[0].node_id == "edge-a"


def test_only_one_half_open_replica_is_tried_per_request() -> None:
    clock = Clock()
    balancer = Balancer(clock)
    for node in ("edge-a", "edge-b"):
        for _ in range(FAILURES_TO_OPEN):
            balancer.failed(TARGET, node)
    clock.now += COOL_DOWN_S
    first = nodes(order(balancer, [A, B, C], "peak-ewma"))
    assert first == ["edge-a", "edge-c"]
    # edge-b's trial was not taken by that request: the next one tries it.
    assert nodes(order(balancer, [A, B, C], "peak-ewma")) == ["edge-b", "edge-c"]
    balancer.first_byte(TARGET, "edge-a", 10.0)
    assert "edge-a" in nodes(order(balancer, [A, B, C], "peak-ewma"))


def test_ranking_changes_nothing_until_a_request_takes_its_turn_and_trial() -> None:
    clock = Clock()
    balancer = Balancer(clock)
    for _ in range(FAILURES_TO_OPEN):
        balancer.failed(TARGET, "edge-a")
    clock.now += COOL_DOWN_S
    ranked = nodes(balancer.rank(TARGET, [A, B, C], "round-robin"))
    assert ranked == ["edge-a", "edge-b", "edge-c"]
    assert nodes(balancer.rank(TARGET, [A, B, C], "round-robin")) == ranked
    assert balancer.claim_trial(TARGET, "edge-a")
    assert not balancer.claim_trial(TARGET, "edge-a"), "one trial at a time"
    balancer.advance(TARGET)
    assert nodes(balancer.rank(TARGET, [A, B, C], "round-robin")) == ["edge-c", "edge-b"]
