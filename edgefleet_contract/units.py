"""Sizes ("512MiB", "4GB") and durations ("500ms", "3s", "10m") as written in manifests."""

from __future__ import annotations

import re

_SIZE_UNITS = {
    "B": 1,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "TB": 1000**4,
    "KiB": 1024,
    "MiB": 1024**2,
    "GiB": 1024**3,
    "TiB": 1024**4,
}
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

# Shared with the JSON Schema, so editors and the loader agree on what is valid.
SIZE_PATTERN = r"^[0-9]+(\.[0-9]+)? ?(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)$"
PERCENT_PATTERN = r"^[0-9]{1,3}(\.[0-9]+)?%$"
DURATION_PATTERN = r"^[0-9]+(\.[0-9]+)?(ms|s|m|h)$"

_SIZE_RE = re.compile(r"([0-9]+(?:\.[0-9]+)?) ?(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)")
_DURATION_RE = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")


def parse_size(value: str | int) -> int:
    """Bytes in a size given as an integer or a string with a unit ("1.5GiB")."""
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    match = _SIZE_RE.fullmatch(value)
    if match is None:
        raise ValueError(f"`{value}` is not a size; write e.g. 512MiB, 4GB or a number of bytes")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2)])


def parse_percent(value: str) -> float:
    """The fraction (0..1] in a percentage such as "75%"."""
    number = float(value.rstrip("%"))
    if not 0 < number <= 100:
        raise ValueError(f"`{value}` must be more than 0% and at most 100%")
    return number / 100


def parse_duration(value: str | int | float) -> float:
    """Seconds in a duration given as a number of seconds or a string with a unit ("500ms")."""
    if isinstance(value, int | float):
        if value <= 0:
            raise ValueError("a duration must be positive")
        return float(value)
    match = _DURATION_RE.fullmatch(value)
    if match is None:
        raise ValueError(f"`{value}` is not a duration; write e.g. 500ms, 3s, 10m or 1h")
    seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if seconds <= 0:
        raise ValueError("a duration must be positive")
    return seconds


def format_size(n_bytes: int) -> str:
    """A size for people: 1536 -> "1.5KiB"."""
    value = float(n_bytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    raise AssertionError("unreachable")
