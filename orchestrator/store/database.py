"""Opening the store's SQLite file: private file mode, pragmas, schema migrations, transactions.

Write-ahead logging keeps a committed transaction intact through a killed
process with `synchronous=NORMAL`; `FULL` also survives a power cut at the cost
of an fsync per commit.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Literal

from orchestrator.store.errors import StoreError
from orchestrator.store.migrations import APPLICATION_ID, MIGRATIONS, Migration

Synchronous = Literal["normal", "full"]

SCHEMA_VERSION = len(MIGRATIONS)
"""The schema this EdgeFleet writes; kept in the file as `PRAGMA user_version`."""

BUSY_TIMEOUT = 5.0
"""Seconds to wait for another connection's write lock before giving up."""


class Database:
    """One SQLite connection to the store; every use is one short transaction."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self._conn = conn
        # The controller calls from its event loop, but a call from a worker
        # thread must not interleave with another transaction on this connection.
        self._lock = threading.Lock()
        self._closed = False

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        synchronous: Synchronous = "normal",
        migrations: Sequence[Migration] = MIGRATIONS,
    ) -> Database:
        """Open (creating it 0600 if missing) and migrate the store at `path`."""
        if synchronous not in ("normal", "full"):
            raise ValueError(f"synchronous must be 'normal' or 'full', not {synchronous!r}")
        path = Path(path)
        _prepare_private_file(path)
        try:
            conn = sqlite3.connect(
                path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise _explain(exc, path) from exc
        db = cls(path, conn)
        try:
            (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
            if str(mode).lower() != "wal":
                raise StoreError(
                    f"the store at {path} cannot use write-ahead logging (journal mode "
                    f"{mode!r}); put the controller's data folder on a local file system"
                )
            conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
            conn.execute("PRAGMA foreign_keys = ON")
            db.migrate(migrations)
        except sqlite3.Error as exc:
            db.close()
            raise _explain(exc, path) from exc
        except BaseException:
            db.close()
            raise
        return db

    def migrate(self, migrations: Sequence[Migration]) -> int:
        """Apply the missing steps, each in its own transaction; return the schema version."""
        known = len(migrations)
        while True:
            with self.write() as conn:
                version = _schema_version(conn, self.path, known)
                if version == known:
                    return version
                for statement in migrations[version].statements:
                    conn.execute(statement)
                # In the same transaction as the step: the version never runs ahead.
                conn.execute(f"PRAGMA user_version = {version + 1}")

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction, taken up front so it never fails half-way on a lock."""
        with self._transaction("BEGIN IMMEDIATE") as conn:
            yield conn

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: one consistent snapshot for all its queries."""
        with self._transaction("BEGIN") as conn:
            yield conn

    @property
    def closed(self) -> bool:
        """Whether `close` was called."""
        return self._closed

    def close(self) -> None:
        """Close the connection; further use raises `StoreError`. Safe to call twice."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()

    @contextmanager
    def _transaction(self, begin: str) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._closed:
                raise StoreError(f"the store at {self.path} is closed; open it again")
            try:
                self._conn.execute(begin)
                yield self._conn
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise _explain(exc, self.path) from exc
            except BaseException:
                self._rollback()
                raise

    def _rollback(self) -> None:
        if self._conn.in_transaction:
            # A failed rollback leaves SQLite to roll back on the next open.
            with suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")


def _explain(exc: sqlite3.Error, path: Path) -> StoreError:
    """A `StoreError` that says what went wrong with the store at `path` and what to do."""
    name = getattr(exc, "sqlite_errorname", "")
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        hint = (
            f"the store at {path} is held by another process; make sure only one "
            "controller uses this data folder"
        )
    elif name.startswith("SQLITE_FULL"):
        hint = f"the disk holding {path} is full; free some space and retry"
    elif name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM")):
        hint = f"the store at {path} cannot be written; check the permissions of {path.parent}"
    elif name.startswith(("SQLITE_NOTADB", "SQLITE_CORRUPT")):
        hint = (
            f"{path} is not a readable EdgeFleet store; restore it from a backup or move it "
            "aside to start an empty one"
        )
    else:
        hint = f"the store at {path} failed"
    return StoreError(f"{hint} ({exc})")


def _schema_version(conn: sqlite3.Connection, path: Path, known: int) -> int:
    """The file's schema version, after checking the file is ours and not from the future."""
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    (application,) = conn.execute("PRAGMA application_id").fetchone()
    if application == 0 and version == 0:
        (tables,) = conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()
        if tables:
            application = -1  # somebody else's database without an id
    if application not in (0, APPLICATION_ID):
        raise StoreError(
            f"{path} is another program's SQLite database, not an EdgeFleet store; "
            "point the controller at its own data folder"
        )
    if version > known:
        raise StoreError(
            f"the store at {path} was written by a newer EdgeFleet (schema {version}, "
            f"this one knows {known}); upgrade edgectl"
        )
    return int(version)


def _prepare_private_file(path: Path) -> None:
    """Create the file 0600 (and its folder 0700) before SQLite opens it.

    The store will hold the cluster's secrets, so an existing file readable by
    others is tightened, together with its write-ahead log.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_mode & 0o077:
                os.fchmod(fd, 0o600)
        finally:
            os.close(fd)
        for suffix in ("-wal", "-shm"):
            companion = path.with_name(path.name + suffix)
            with suppress(FileNotFoundError):
                if companion.stat().st_mode & 0o077:
                    companion.chmod(0o600)
    except OSError as exc:
        raise StoreError(
            f"cannot open the store at {path}: {exc.strerror or exc}; check that its folder "
            "is writable by the user running the controller"
        ) from exc
