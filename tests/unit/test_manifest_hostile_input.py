"""Hostile input gets a clear, located error with bounded work and memory."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest

from orchestrator.manifest import ManifestError, load_file, load_text
from orchestrator.manifest.yaml_source import MAX_BYTES, MAX_DEPTH, MAX_NODES

BILLION_LAUGHS = "\n".join(
    [
        'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
        *[
            f"{chr(ord('b') + i)}: &{chr(ord('b') + i)} ["
            + ",".join([f"*{chr(ord('a') + i)}"] * 9)
            + "]"
            for i in range(8)
        ],
        "deployment: *i",
    ]
)


def _error(text: str) -> str:
    with pytest.raises(ManifestError) as caught:
        load_text(text, source="evil.yaml")
    return str(caught.value)


def test_alias_bomb_is_stopped_by_the_expansion_budget_in_bounded_memory() -> None:
    tracemalloc.start()
    try:
        message = _error(BILLION_LAUGHS)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert f"expands to more than {MAX_NODES} values" in message
    assert "evil.yaml:" in message
    # 9**9 values would need gigabytes; the budget keeps it to a few tens of MB.
    assert peak < 64 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB"


def test_recursive_alias_is_an_error_not_a_hang() -> None:
    assert "cycle" in _error("deployment: &d\n  type: single-device\n  self: *d\n")


def test_deep_nesting_is_refused_before_the_stack_is() -> None:
    text = "deployment: " + "[" * 5000 + "]" * 5000
    assert f"nesting deeper than {MAX_DEPTH} levels" in _error(text)


def test_huge_file_is_refused_without_reading_it_whole(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    with big.open("wb") as handle:
        handle.write(b"deployment:\n  hardware: '")
        handle.write(b"x" * (MAX_BYTES + 10))
        handle.write(b"'\n")
    with pytest.raises(ManifestError) as caught:
        load_file(big)
    assert "larger than 1024 KiB" in str(caught.value)


def test_binary_junk_is_refused_with_a_location(tmp_path: Path) -> None:
    junk = tmp_path / "junk.yaml"
    junk.write_bytes(b"deployment:\n  type: \xff\xfe\x00\x01")
    with pytest.raises(ManifestError) as caught:
        load_file(junk)
    (error,) = caught.value.diagnostics
    assert (error.line, error.column) == (2, 9)
    assert "not UTF-8" in error.message


def test_control_characters_are_refused() -> None:
    assert "control character" in _error("deployment:\n  type: \x00\x01")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "the manifest is empty"),
        ("   \n# only a comment\n", "the manifest is empty"),
        ("deployment:\n", "expected a mapping, got nothing (null)"),
        ("42\n", "expected a mapping, got an integer"),
        ("just a string\n", "expected a mapping, got a string"),
        ("a: 1\n---\nb: 2\n", "more than one YAML document"),
        ("deployment: {type: [unclosed\n", "YAML:"),
        ("deployment:\n\ttype: x\n", "YAML:"),
        ("deployment: !!python/object:os.system {}\n", "unsupported YAML tag"),
        ("? [a, b]\n: c\n", "a key must be a plain name"),
    ],
)
def test_malformed_documents_get_a_clear_error(text: str, expected: str) -> None:
    message = _error(text)
    assert expected in message
    assert message.startswith("evil.yaml:")


def test_yaml_1_2_scalars_dates_stay_strings() -> None:
    loaded = load_text("deployment: {type: single-device, models: [{alias: 2024-01-01}]}")
    assert loaded.desired.models[0].alias == "2024-01-01"
