"""What every `SqliteStore` call stands on: the database, the change listeners, the
leader term and the controllers registered."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from orchestrator.store import members as _members
from orchestrator.store import terms as _terms
from orchestrator.store.changes import ChangeArea, ChangeCallback, ChangeListeners
from orchestrator.store.database import Database
from orchestrator.store.events import DEFAULT_MAX_EVENTS
from orchestrator.store.members import DEFAULT_WITHIN_S, MemberRow
from orchestrator.store.revisions import Revision
from orchestrator.store.state_store import StoreHealth


class SqliteStoreBase:
    """The database and listeners that `SqliteStore`'s calls share (see there)."""

    def __init__(
        self,
        db: Database,
        *,
        controller_id: str,
        cluster_name: str,
        max_events: int = DEFAULT_MAX_EVENTS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_events < 1:
            raise ValueError("max_events must be at least 1")
        self._db = db
        self._controller_id = controller_id
        self._cluster_name = cluster_name
        self._max_events = max_events
        self._clock = clock
        self._changes = ChangeListeners()
        self._current: list[Revision] | None = None
        # Read once (the gateway asks on every request); only this store changes them.

    @property
    def path(self) -> Path:
        """The store's file."""
        return self._db.path

    @property
    def controller_id(self) -> str:
        """A random id made when the store was created, kept for its lifetime."""
        return self._controller_id

    @property
    def cluster_name(self) -> str:
        """The cluster this store belongs to."""
        return self._cluster_name

    def close(self) -> None:
        """Close the store; safe to call twice."""
        self._db.close()

    def health(self) -> StoreHealth:
        """Writable unless closed."""
        if self._db.closed:
            return StoreHealth("sqlite", False, f"the store at {self.path} is closed")
        return StoreHealth("sqlite", True, str(self.path))

    def fence(self, term: int) -> None:
        """Nothing to check: this controller is the only one on its file."""
        if term < 1:
            raise ValueError("a leader term is at least 1")

    def unfence(self) -> None:
        """Nothing to undo (see `fence`)."""

    def on_change(self, callback: ChangeCallback) -> None:
        """Call `callback` with the areas written after each write call of this store."""
        self._changes.add(callback)

    # Leader terms and the cluster's controllers

    def begin_term(self, floor: int = 0) -> int:
        """Start a new leader term: one above the last and above `floor`, kept in the file."""
        with self._db.write() as conn:
            return _terms.begin_term(conn, floor)

    def current_term(self) -> int:
        """The term the last leader took (0: none yet)."""
        with self._db.read() as conn:
            return _terms.current_term(conn)

    def register_member(self, controller_id: str, address: str, role: str) -> None:
        """Record that a controller runs now, where its API listens and its role."""
        with self._db.write() as conn:
            _members.register_member(conn, MemberRow(controller_id, address, role, self._clock()))

    def members(self, within_s: float = DEFAULT_WITHIN_S) -> list[MemberRow]:
        """The controllers registered in the last `within_s` seconds, by id."""
        with self._db.read() as conn:
            rows = _members.members(conn)
        return _members.seen_within(rows, self._clock(), within_s)

    @contextmanager
    def _write(self, *areas: ChangeArea) -> Iterator[sqlite3.Connection]:
        """A write transaction; once committed, the change listeners hear of `areas`."""
        with self._db.write() as conn:
            yield conn
        self._changes.notify(areas)
