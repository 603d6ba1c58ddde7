"""The one backoff: doubling delays with a ceiling, reset after a success."""

from __future__ import annotations

import asyncio

import pytest

from edgefleet_common.backoff import Backoff


def test_delays_double_up_to_the_ceiling_and_reset_starts_over() -> None:
    backoff = Backoff(0.5, 3.0)
    assert [backoff.next() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    backoff.reset()
    assert backoff.next() == 0.5


def test_a_factor_of_one_keeps_the_delay() -> None:
    backoff = Backoff(1.0, 1.0, factor=1.0)
    assert [backoff.next() for _ in range(3)] == [1.0, 1.0, 1.0]


@pytest.mark.parametrize(("first", "most", "factor"), [(0, 1, 2), (2, 1, 2), (1, 2, 0.5)])
def test_nonsense_settings_are_refused(first: float, most: float, factor: float) -> None:
    with pytest.raises(ValueError, match="backoff"):
        Backoff(first, most, factor)


def test_wait_sleeps_the_delay_it_reports() -> None:
    backoff = Backoff(0.01, 0.02)

    async def twice() -> list[float]:
        return [await backoff.wait(), await backoff.wait()]

    assert asyncio.run(twice()) == [0.01, 0.02]
