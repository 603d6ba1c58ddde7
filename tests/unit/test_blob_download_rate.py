"""The download rate limit (token bucket) and progress figures, on a fake clock."""

from __future__ import annotations

import pytest

from node_agent.blobs import TokenBucket
from node_agent.blobs.progress import REPORT_EVERY_S, ProgressMeter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_bucket_lets_a_burst_through_then_paces() -> None:
    clock = Clock()
    bucket = TokenBucket(100_000, clock=clock)
    assert bucket.burst == 100_000  # one second's worth
    assert bucket.reserve(100_000) == 0.0
    assert bucket.reserve(50_000) == pytest.approx(0.5)
    clock.now += 0.5  # the taker waited
    assert bucket.reserve(100_000) == pytest.approx(1.0)


def test_a_chunk_larger_than_the_burst_waits_for_its_debt() -> None:
    clock = Clock()
    bucket = TokenBucket(10_000, clock=clock)  # burst: at least 64 KiB
    assert bucket.burst == 64 * 1024
    assert bucket.reserve(64 * 1024) == 0.0
    assert bucket.reserve(256 * 1024) == pytest.approx(256 * 1024 / 10_000)


def test_bytes_moved_stay_within_rate_times_time_plus_burst() -> None:
    clock = Clock()
    rate = 200_000
    bucket = TokenBucket(rate, clock=clock)
    start, moved = clock.now, 0
    for chunk in [65_536, 1_000, 262_144, 17, 300_000, 4_096] * 20:
        clock.now += bucket.reserve(chunk)  # the taker sleeps what it is told, then sends
        moved += chunk
        assert moved <= rate * (clock.now - start) + bucket.burst + 1  # float rounding
    # ... and it is not slower than the rate either.
    assert moved >= rate * (clock.now - start) - 1


def test_no_rate_no_wait_and_the_rate_can_change() -> None:
    clock = Clock()
    bucket = TokenBucket(0, clock=clock)
    assert bucket.reserve(10**9) == 0.0
    bucket.set_rate(1_000_000)
    assert bucket.burst == 1_000_000
    clock.now += 1.0
    assert bucket.reserve(1_500_000) == pytest.approx(0.5)


def test_progress_reports_rate_and_time_left() -> None:
    clock = Clock()
    reports: list[tuple[int, int | None, float, float | None, str]] = []
    meter = ProgressMeter(lambda *report: reports.append(report), clock=clock)

    meter.update(0, 1000, "peer n2")
    clock.now += 1.0
    meter.update(100, 1000, "peer n2")
    clock.now += REPORT_EVERY_S / 2
    meter.update(150, 1000, "peer n2")  # too soon to report again
    clock.now += 1.0
    meter.update(250, None, "origin")

    assert reports[0] == (0, 1000, 0.0, None, "peer n2")
    assert reports[1] == (100, 1000, 100.0, 9.0, "peer n2")
    assert len(reports) == 3
    assert reports[2][0] == 250
    assert reports[2][2] == pytest.approx(250 / 2.25)
    assert reports[2][3] is None  # no total: no time left either
    meter.update(1000, 1000, "origin", final=True)
    assert reports[-1][0::3] == (1000, 0.0)
