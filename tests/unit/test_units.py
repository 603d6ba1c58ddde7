"""Sizes and durations as manifests write them."""

from __future__ import annotations

import pytest

from edgefleet_contract.units import format_size, parse_duration, parse_percent, parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("512MiB", 512 * 1024**2),
        ("4GB", 4 * 1000**3),
        ("1.5GiB", int(1.5 * 1024**3)),
        ("3 GiB", 3 * 1024**3),
        ("100B", 100),
        (2048, 2048),
    ],
)
def test_sizes(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("500ms", 0.5), ("3s", 3.0), ("10m", 600.0), ("1h", 3600.0), (2, 2.0), (0.25, 0.25)],
)
def test_durations(text: str | float, expected: float) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("bad", ["3 gigs", "GiB", "-1MiB", "1.5"])
def test_bad_sizes(bad: str) -> None:
    with pytest.raises(ValueError, match="not a size"):
        parse_size(bad)


@pytest.mark.parametrize("bad", ["3", "3 s", "0s", "1d"])
def test_bad_durations(bad: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


def test_percent_bounds() -> None:
    assert parse_percent("75%") == 0.75
    for bad in ("0%", "101%"):
        with pytest.raises(ValueError, match="more than 0% and at most 100%"):
            parse_percent(bad)


def test_format_size() -> None:
    assert format_size(512) == "512B"
    assert format_size(1536) == "1.5KiB"
    assert format_size(3 * 1024**3) == "3.0GiB"
