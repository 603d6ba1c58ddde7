"""Opening the store: file mode, pragmas, schema migrations, refusals with a way out."""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.store import SCHEMA_VERSION, SqliteStore, StoreError
from orchestrator.store import database as database_module
from orchestrator.store.assignment import save_assignment
from orchestrator.store.database import Database
from orchestrator.store.migrations import MIGRATIONS, Migration
from orchestrator.store.revisions import add_revision


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def user_version(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


def tables(path: Path) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT name FROM sqlite_schema WHERE type = 'table'").fetchall()
    finally:
        conn.close()
    return {name for (name,) in rows}


@pytest.fixture
def open_umask() -> Iterator[None]:
    """A umask that would let everybody read new files: the store must not rely on it."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


# The file


@pytest.mark.usefixtures("open_umask")
def test_the_store_and_its_log_are_private_whatever_the_umask(tmp_path: Path) -> None:
    path = tmp_path / "data" / "store.sqlite"
    with SqliteStore.open(path) as store:
        store.set_setting("k", "v")  # a write, so the log files exist
        assert mode(path) == 0o600
        assert mode(path.with_name("store.sqlite-wal")) == 0o600
        assert mode(path.with_name("store.sqlite-shm")) == 0o600
    assert mode(path.parent) == 0o700


def test_an_existing_store_readable_by_others_is_tightened(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    SqliteStore.open(path).close()
    path.chmod(0o644)
    with SqliteStore.open(path):
        assert mode(path) == 0o600


@pytest.mark.parametrize(("synchronous", "level"), [("normal", 1), ("full", 2)])
def test_pragmas(tmp_path: Path, synchronous: database_module.Synchronous, level: int) -> None:
    db = Database.open(tmp_path / "store.sqlite", synchronous=synchronous)
    try:
        with db.read() as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert conn.execute("PRAGMA synchronous").fetchone()[0] == level
            assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
            assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 5000
    finally:
        db.close()


def test_an_unknown_synchronous_level_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="synchronous"):
        Database.open(tmp_path / "store.sqlite", synchronous="off")  # type: ignore[arg-type]


def test_an_unwritable_folder_is_explained(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("a file where a folder should be")
    with pytest.raises(StoreError, match=r"cannot open the store at .*taken/store\.sqlite"):
        SqliteStore.open(tmp_path / "taken" / "store.sqlite")


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    path.write_bytes(b"definitely not SQLite\n" * 20)
    with pytest.raises(StoreError, match="not a readable EdgeFleet store; restore it"):
        SqliteStore.open(path)


def test_another_programs_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="another program's SQLite database"):
        SqliteStore.open(path)
    assert tables(path) == {"photos"}  # left untouched


def test_a_store_held_by_another_writer_is_explained(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(database_module, "BUSY_TIMEOUT", 0.1)
    path = tmp_path / "store.sqlite"
    store = SqliteStore.open(path)
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreError, match="held by another process"):
            store.set_setting("k", "v")
        other.execute("ROLLBACK")
        store.set_setting("k", "v")  # usable again once the lock is gone
        assert store.get_setting("k") == "v"
    finally:
        other.close()
        store.close()


# Schema versions and migrations


def test_a_new_store_is_at_the_current_schema(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    SqliteStore.open(path).close()
    assert user_version(path) == SCHEMA_VERSION == len(MIGRATIONS)


def test_a_schema_1_store_is_upgraded_keeping_its_data(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    old = Database.open(path, migrations=MIGRATIONS[:1])
    with old.write() as conn:
        add_revision(
            conn,
            "chat",
            source="fleet.yaml",
            manifest="m",
            desired_json="{}",
            digest="d",
            cause="apply",
            now=1.0,
        )
        save_assignment(conn, {"edge-1": "a"}, now=1.0)
    old.close()
    assert user_version(path) == 1
    assert "events" not in tables(path)

    with SqliteStore.open(path) as store:
        assert [(r.deployment, r.number) for r in store.current()] == [("chat", 1)]
        assert store.assignment()["edge-1"].generation == 1
        assert (
            store.add_event(
                severity="info", reason="Upgraded", object="store", message="schema 2"
            ).id
            == 1
        )
        assert store.controller_id
    assert user_version(path) == SCHEMA_VERSION


def test_a_later_table_is_one_more_migration(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    SqliteStore.open(path).close()
    later = (
        *MIGRATIONS,
        Migration(
            summary="secrets",
            statements=("CREATE TABLE secrets (name TEXT PRIMARY KEY, value BLOB) STRICT",),
        ),
    )
    Database.open(path, migrations=later).close()
    assert user_version(path) == SCHEMA_VERSION + 1
    assert "secrets" in tables(path)


def test_a_failing_migration_leaves_the_previous_version_whole(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    SqliteStore.open(path).close()
    broken = (
        *MIGRATIONS,
        Migration(summary="broken", statements=("CREATE TABLE half (x TEXT)", "NOT SQL AT ALL")),
    )
    with pytest.raises(StoreError, match="failed"):
        Database.open(path, migrations=broken)
    assert user_version(path) == SCHEMA_VERSION
    assert "half" not in tables(path)
    SqliteStore.open(path).close()  # still opens as before


def test_a_store_from_a_newer_edgefleet_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    with SqliteStore.open(path) as store:
        store.set_setting("k", "v")
    newer = SCHEMA_VERSION + 1
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {newer}")
    conn.close()
    expected = (
        f"the store at {path} was written by a newer EdgeFleet "
        f"\\(schema {newer}, this one knows {SCHEMA_VERSION}\\); upgrade edgectl"
    )
    with pytest.raises(StoreError, match=expected):
        SqliteStore.open(path)
    assert user_version(path) == newer  # never downgraded
