"""Cordoned and draining nodes in the store: kept across reopening and upgrades."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from orchestrator.store import NodeMarkRow, SqliteStore, StoreError
from orchestrator.store.database import Database
from orchestrator.store.migrations import MIGRATIONS


class Clock:
    """A clock that moves one second per reading."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def test_marks_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    clock = Clock()
    with SqliteStore.open(path, clock=clock) as store:
        cordoned = store.mark_node("edge-1", "cordoned", reason="disk swap")
        draining = store.mark_node("edge-2", "draining")
        assert cordoned == NodeMarkRow("edge-1", "cordoned", "disk swap", clock.now - 1)
        assert store.mark_drained("edge-2") is not None
    with SqliteStore.open(path) as store:
        marks = store.node_marks()
    assert marks["edge-1"] == cordoned
    assert (marks["edge-2"].mark, marks["edge-2"].since) == ("draining", draining.since)
    assert marks["edge-2"].drained_at is not None


def test_a_new_mark_replaces_the_old_and_forgets_the_drain(tmp_path: Path) -> None:
    with SqliteStore.open(tmp_path / "store.sqlite", clock=Clock()) as store:
        store.mark_node("edge-1", "draining", reason="first")
        store.mark_drained("edge-1")
        store.mark_node("edge-1", "cordoned", reason="second")
        (row,) = store.node_marks().values()
        assert (row.mark, row.reason, row.drained_at) == ("cordoned", "second", None)
        # Only a draining node can be drained.
        assert store.mark_drained("edge-1") is None
        assert store.mark_drained("edge-9") is None
        assert store.node_marks()["edge-1"].drained_at is None


def test_unmark_says_whether_there_was_a_mark(tmp_path: Path) -> None:
    with SqliteStore.open(tmp_path / "store.sqlite") as store:
        store.mark_node("edge-1", "cordoned")
        assert store.unmark_node("edge-1") is True
        assert store.unmark_node("edge-1") is False
        assert store.node_marks() == {}


def test_bad_marks_are_refused_and_change_nothing(tmp_path: Path) -> None:
    with SqliteStore.open(tmp_path / "store.sqlite") as store:
        with pytest.raises(ValueError, match="mark must be one of"):
            store.mark_node("edge-1", "evicted")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="needs an id"):
            store.mark_node("", "cordoned")
        assert store.node_marks() == {}


def test_the_table_refuses_a_mark_it_does_not_know(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    SqliteStore.open(path).close()
    with sqlite3.connect(path) as conn, pytest.raises(sqlite3.IntegrityError):
        conn.execute(
            "INSERT INTO node_marks (node_id, mark, reason, since) VALUES ('n', 'gone', '', 1)"
        )


def test_a_store_from_before_marks_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    before = MIGRATIONS.index(next(m for m in MIGRATIONS if "cordoned" in m.summary))
    Database.open(path, migrations=MIGRATIONS[:before]).close()
    with SqliteStore.open(path) as store:
        store.mark_node("edge-1", "draining")
        assert list(store.node_marks()) == ["edge-1"]


def test_a_closed_store_refuses_marks(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path / "store.sqlite")
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.node_marks()
