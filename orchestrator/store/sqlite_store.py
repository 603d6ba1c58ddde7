"""`SqliteStore`: what the controller must not forget, one short SQLite transaction per call."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping
from pathlib import Path

from orchestrator.store import assignment as _assignment
from orchestrator.store import events as _events
from orchestrator.store import node_marks as _marks
from orchestrator.store import nodes as _nodes
from orchestrator.store import revisions as _revisions
from orchestrator.store import routes as _routes
from orchestrator.store import settings as _settings
from orchestrator.store.assignment import NodeAssignment
from orchestrator.store.database import Database, Synchronous
from orchestrator.store.events import DEFAULT_MAX_EVENTS, EventRow, Severity
from orchestrator.store.node_marks import Mark, NodeMarkRow
from orchestrator.store.nodes import DiscoveredBy, NodeRow
from orchestrator.store.revisions import DeploymentRow, Revision
from orchestrator.store.sqlite_trust_store import SqliteTrustRecords
from orchestrator.store.state_store import StateStore


class SqliteStore(SqliteTrustRecords):
    """The controller's state: revisions, deployments, nodes, assignment, events, settings.

    Every method is one transaction: a controller killed at any moment reopens
    to the state before or after each call, never in between. Times are Unix
    seconds (float).

    A single controller owns the file (SQLite's lock keeps a second one out), so
    it is always the leader: `fence` and `unfence` change nothing, and no write
    raises `NotLeader`. `on_change` callbacks run on the writing thread, right
    after each write call of this store commits (even one that changed nothing).
    """

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        cluster_name: str | None = None,
        synchronous: Synchronous = "normal",
        max_events: int = DEFAULT_MAX_EVENTS,
        clock: Callable[[], float] = time.time,
    ) -> SqliteStore:
        """Open the store at `path`, creating and upgrading it as needed.

        `cluster_name` names a new store; for an existing one it must match
        (None accepts whatever is stored). `synchronous="full"` makes every
        commit survive a power cut, not only a crash, at the cost of an fsync.
        """
        if cluster_name is not None and not cluster_name:
            raise ValueError("cluster_name must not be empty")
        db = Database.open(Path(path), synchronous=synchronous)
        try:
            with db.write() as conn:
                controller_id, stored_name = _settings.identity(conn, cluster_name, db.path)
            return cls(
                db,
                controller_id=controller_id,
                cluster_name=stored_name,
                max_events=max_events,
                clock=clock,
            )
        except BaseException:
            db.close()
            raise

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        self.close()

    # Revisions and deployments

    def add_revision(
        self,
        deployment: str,
        *,
        source: str,
        manifest: str,
        desired_json: str,
        digest: str,
        cause: str,
    ) -> Revision:
        """Store the next revision of `deployment` (from 1) and make it current, undeleted."""
        self._current = None
        with self._write("revisions") as conn:
            return _revisions.add_revision(
                conn,
                deployment,
                source=source,
                manifest=manifest,
                desired_json=desired_json,
                digest=digest,
                cause=cause,
                now=self._clock(),
            )

    def current(self) -> list[Revision]:
        """The current revision of each deployment that is not deleted, by name."""
        if self._current is None:
            with self._db.read() as conn:
                self._current = _revisions.current(conn)
        return list(self._current)

    def revision(self, deployment: str, number: int) -> Revision | None:
        """One revision of a deployment, or None."""
        with self._db.read() as conn:
            return _revisions.revision(conn, deployment, number)

    def revisions(self, deployment: str) -> list[Revision]:
        """Every revision of a deployment, newest first."""
        with self._db.read() as conn:
            return _revisions.revisions(conn, deployment)

    def deployments(self) -> list[DeploymentRow]:
        """Every deployment ever applied, deleted ones included, by name."""
        with self._db.read() as conn:
            return _revisions.deployments(conn)

    def delete_deployment(self, name: str) -> bool:
        """Mark a deployment deleted (its revisions stay); False if unknown or deleted."""
        self._current = None
        with self._write("revisions") as conn:
            return _revisions.delete_deployment(conn, name, now=self._clock())

    # Assignment

    def assignment(self) -> dict[str, NodeAssignment]:
        """What each node should run, by node id."""
        with self._db.read() as conn:
            return _assignment.assignment(conn)

    def save_assignment(
        self, changed: Mapping[str, str], *, force: Collection[str] = ()
    ) -> dict[str, int]:
        """Save nodes' desired state (JSON); each node whose state differs gets a new generation.

        Returns the new generation of each node that got one; an unchanged node
        keeps its generation, unless it is in `force` (e.g. it reported a
        generation above the store's and must be handed a higher one).
        """
        with self._write("assignment") as conn:
            return _assignment.save_assignment(conn, changed, now=self._clock(), force=force)

    def last_generation(self) -> int:
        """The highest generation handed out or raised to (0 on a new store)."""
        with self._db.read() as conn:
            return _assignment.last_generation(conn)

    def raise_generation_floor(self, floor: int) -> int:
        """Make the generation counter at least `floor`; return its value.

        For a node that reports a generation the store does not know, e.g. after
        the store was restored from a backup: the next one handed out is higher.
        """
        with self._write("assignment") as conn:
            return _assignment.raise_generation_floor(conn, floor)

    # Routing table

    def routes_generation(self) -> int:
        """The generation of the last routing table made (0: none yet)."""
        with self._db.read() as conn:
            return _routes.routes_generation(conn)[0]

    def number_routes(self, content_key: str, *, floor: int = 0) -> int:
        """The generation of a routing table with this content: unchanged for the same
        content (when at least `floor`), else one above the last and above `floor` (what
        a node reports holding)."""
        with self._write("routes") as conn:
            return _routes.number_routes(conn, content_key, floor=floor)

    # Nodes

    def upsert_node(
        self,
        node_id: str,
        *,
        address: str,
        discovered_by: DiscoveredBy,
        labels: Mapping[str, str],
        last_seen: float,
    ) -> NodeRow:
        """Record a node or update it; its first sighting is kept."""
        with self._write("nodes") as conn:
            return _nodes.upsert_node(
                conn,
                node_id,
                address=address,
                discovered_by=discovered_by,
                labels=labels,
                last_seen=last_seen,
            )

    def nodes(self) -> list[NodeRow]:
        """Every known node, by id."""
        with self._db.read() as conn:
            return _nodes.nodes(conn)

    def forget_node(self, node_id: str) -> bool:
        """Remove a node and its assignment; False if neither was known.

        Should it come back, its next assignment still gets a higher generation
        than anything it held, since the counter is shared.
        """
        with self._write("nodes", "assignment") as conn:
            known = _nodes.forget_node(conn, node_id)
            return _assignment.clear_assignment(conn, node_id) or known

    # Cordoned and draining nodes

    def mark_node(self, node_id: str, mark: Mark, *, reason: str = "") -> NodeMarkRow:
        """Cordon a node or drain it (replacing an earlier mark)."""
        with self._write("marks") as conn:
            return _marks.set_mark(conn, node_id, mark, reason=reason, now=self._clock())

    def mark_drained(self, node_id: str) -> NodeMarkRow | None:
        """Note that a draining node is empty; None when it is not draining."""
        with self._write("marks") as conn:
            return _marks.set_drained(conn, node_id, now=self._clock())

    def unmark_node(self, node_id: str) -> bool:
        """Uncordon a node; False when it was neither cordoned nor draining."""
        with self._write("marks") as conn:
            return _marks.clear_mark(conn, node_id)

    def node_marks(self) -> dict[str, NodeMarkRow]:
        """Every cordoned or draining node, by id."""
        with self._db.read() as conn:
            return _marks.marks(conn)

    # Events

    def add_event(
        self,
        *,
        severity: Severity,
        reason: str,
        object: str,
        node_id: str = "",
        message: str,
    ) -> EventRow:
        """Append an event; the oldest are trimmed beyond `max_events`."""
        with self._write("events") as conn:
            return _events.add_event(
                conn,
                severity=severity,
                reason=reason,
                object=object,
                node_id=node_id,
                message=message,
                now=self._clock(),
                keep=self._max_events,
            )

    def events(
        self, after_id: int = 0, limit: int | None = None, object: str | None = None
    ) -> list[EventRow]:
        """Events after `after_id`, oldest first; with `limit`, only the newest `limit`."""
        with self._db.read() as conn:
            return _events.events(conn, after_id=after_id, limit=limit, object=object)


_SATISFIES_PROTOCOL: type[StateStore] = SqliteStore
