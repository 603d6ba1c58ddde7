"""The dashboard's request series: steps, percentiles, the window, and the balancer that
feeds them."""

from __future__ import annotations

from orchestrator.dashboard.traffic import (
    STEP_S,
    WINDOW_S,
    CountingBalancer,
    Traffic,
    percentile,
)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.95) == 95.0
    assert percentile([7.0], 0.95) == 7.0


def test_a_step_counts_its_requests_and_latencies_once_it_is_complete() -> None:
    clock = Clock(1000.0)  # the start of a step
    traffic = Traffic(clock)
    for latency in (10.0, 20.0, 30.0, 40.0):
        traffic.started("assistant")
        traffic.answered("assistant", latency)
    traffic.started("assistant")  # a request that got no answer
    assert traffic.series()["assistant"][-1]["rps"] == 0  # the step is not complete yet

    clock.now += STEP_S
    points = traffic.series()["assistant"]
    assert len(points) == WINDOW_S // STEP_S - 1
    assert points[-1] == {"t": 1005, "rps": 5 / STEP_S, "p50_ms": 20.0, "p95_ms": 40.0}
    assert all(p["rps"] == 0 and p["p50_ms"] is None for p in points[:-1])
    assert [p["t"] for p in points] == sorted(p["t"] for p in points)


def test_targets_leave_the_series_once_their_requests_are_out_of_the_window() -> None:
    clock = Clock(2000.0)
    traffic = Traffic(clock)
    traffic.started("old-agent")
    clock.now += WINDOW_S - STEP_S
    traffic.started("tinyllama")
    assert set(traffic.series()) == {"old-agent", "tinyllama"}
    clock.now += STEP_S
    assert set(traffic.series()) == {"tinyllama"}
    clock.now += WINDOW_S
    assert traffic.series() == {}


def test_the_counting_balancer_still_balances() -> None:
    traffic = Traffic(Clock(3000.0))
    balancer = CountingBalancer(traffic, clock=Clock(1.0))
    balancer.started("assistant", "edge-1")
    balancer.first_byte("assistant", "edge-1", 12.5)
    stats = balancer.known("assistant", "edge-1")
    assert stats is not None
    assert (stats.in_flight, stats.latency_ewma_ms, stats.circuit) == (1, 12.5, "closed")
    balancer.finished("assistant", "edge-1")
    assert balancer.known("assistant", "edge-1").in_flight == 0  # type: ignore[union-attr]


def test_many_latencies_in_one_step_keep_a_bounded_sample() -> None:
    clock = Clock(4000.0)
    traffic = Traffic(clock)
    for n in range(10_000):
        traffic.started("tinyllama")
        traffic.answered("tinyllama", float(n % 100))
    clock.now += STEP_S
    point = traffic.series()["tinyllama"][-1]
    assert point["rps"] == 10_000 / STEP_S
    assert 35.0 <= point["p50_ms"] <= 65.0
    assert point["p95_ms"] >= 85.0
