"""Learned blob hashes: recorded once per source, never over a pin, disagreements told."""

from __future__ import annotations

import json
from pathlib import Path

from orchestrator.blob_records import KEY_PREFIX, BlobRecords, BlobReport, judge
from orchestrator.scheduler.model import KnownBlob
from orchestrator.store import SqliteStore

URL = "https://models.example/phi.gguf"
A, B = "a" * 64, "b" * 64


def test_the_first_report_becomes_the_record_and_another_hash_is_a_disagreement() -> None:
    reports = [BlobReport("n2", URL, B, 100), BlobReport("n1", URL, A, 100)]
    written, found = judge(reports, {}, {})
    assert written == {URL: KnownBlob(A, 100)}
    assert [(d.node, d.expected, d.reported, d.pinned) for d in found] == [("n2", A, B, False)]
    assert "n2 reports sha256 " + B in found[0].message()


def test_a_pin_is_never_overridden_and_a_matching_report_adds_the_size() -> None:
    written, found = judge([BlobReport("n1", URL, B, 7)], {URL: A}, {})
    assert written == {}
    assert found[0].pinned
    assert found[0].expected == A
    written, found = judge([BlobReport("n1", URL, A, 7)], {URL: A}, {})
    assert written == {URL: KnownBlob(A, 7)}
    assert not found


def test_a_report_that_matches_the_record_writes_nothing() -> None:
    written, found = judge([BlobReport("n1", URL, A, 7)], {}, {URL: KnownBlob(A, 7)})
    assert written == {}
    assert found == []


def test_local_sources_and_malformed_hashes_are_not_recorded() -> None:
    reports = [BlobReport("n1", "/models/phi.gguf", A, 7), BlobReport("n1", URL, "xyz", 7)]
    assert judge(reports, {}, {}) == ({}, [])


def test_records_live_in_the_store_settings(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path / "state.db")
    records = BlobRecords(store)
    assert records.learn([BlobReport("n1", URL, A, 42)], {}) == []
    assert json.loads(store.get_setting(KEY_PREFIX + URL) or "") == {"sha256": A, "size": 42}
    again = BlobRecords(store)
    assert again.lookup([URL, "/local.gguf"]) == {URL: KnownBlob(A, 42)}
    told = again.learn([BlobReport("n3", URL, B, 42)], {})
    assert [d.node for d in told] == ["n3"]
    assert again.learn([BlobReport("n3", URL, B, 42)], {}) == []  # told once
    assert again.get(URL) == KnownBlob(A, 42)


def test_an_unreadable_record_counts_as_none(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path / "state.db")
    store.set_setting(KEY_PREFIX + URL, '{"sha256": "nope"}')
    assert BlobRecords(store).get(URL) is None
