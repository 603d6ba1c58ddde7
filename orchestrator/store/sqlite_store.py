"""`SqliteStore`: what the controller must not forget, one short SQLite transaction per call."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from types import TracebackType

from edgefleet_common.cluster import DEFAULT_CLUSTER
from orchestrator.store import assignment as _assignment
from orchestrator.store import credentials as _credentials
from orchestrator.store import events as _events
from orchestrator.store import node_marks as _marks
from orchestrator.store import nodes as _nodes
from orchestrator.store import revisions as _revisions
from orchestrator.store import routes as _routes
from orchestrator.store import settings as _settings
from orchestrator.store.assignment import NodeAssignment
from orchestrator.store.credentials import CredentialKind, CredentialRow
from orchestrator.store.database import Database, StoreError, Synchronous
from orchestrator.store.events import DEFAULT_MAX_EVENTS, EventRow, Severity
from orchestrator.store.node_marks import Mark, NodeMarkRow
from orchestrator.store.nodes import DiscoveredBy, NodeRow
from orchestrator.store.revisions import DeploymentRow, Revision


class SqliteStore:
    """The controller's state: revisions, deployments, nodes, assignment, events, settings.

    Every method is one transaction: a controller killed at any moment reopens
    to the state before or after each call, never in between. Times are Unix
    seconds (float).
    """

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
        self._current: list[Revision] | None = None
        """The current revisions, read once: only this store changes them (one controller
        per data folder, one thread), so `add_revision` and `delete_deployment` drop the
        copy. The gateway asks for them on every request."""

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
                controller_id = _settings.get_meta(conn, "controller_id")
                if controller_id is None:
                    controller_id = str(uuid.uuid4())
                    _settings.set_meta(conn, "controller_id", controller_id)
                stored_name = _settings.get_meta(conn, "cluster_name")
                if stored_name is None:
                    stored_name = cluster_name or DEFAULT_CLUSTER
                    _settings.set_meta(conn, "cluster_name", stored_name)
                elif cluster_name is not None and cluster_name != stored_name:
                    raise StoreError(
                        f"the store at {db.path} belongs to cluster {stored_name!r}, not "
                        f"{cluster_name!r}; use that cluster's data folder or drop the name"
                    )
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

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
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
        with self._db.write() as conn:
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
        with self._db.write() as conn:
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

        All in one transaction. Returns the new generation of each node that got
        one; a node whose JSON is unchanged keeps its generation and is left
        out, unless it is in `force` (e.g. it reported a generation above the
        store's and must be handed a higher one).
        """
        with self._db.write() as conn:
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
        with self._db.write() as conn:
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
        with self._db.write() as conn:
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
        with self._db.write() as conn:
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
        with self._db.write() as conn:
            known = _nodes.forget_node(conn, node_id)
            return _assignment.clear_assignment(conn, node_id) or known

    # Cordoned and draining nodes

    def mark_node(self, node_id: str, mark: Mark, *, reason: str = "") -> NodeMarkRow:
        """Cordon a node or drain it (replacing an earlier mark)."""
        with self._db.write() as conn:
            return _marks.set_mark(conn, node_id, mark, reason=reason, now=self._clock())

    def mark_drained(self, node_id: str) -> NodeMarkRow | None:
        """Note that a draining node is empty; None when it is not draining."""
        with self._db.write() as conn:
            return _marks.set_drained(conn, node_id, now=self._clock())

    def unmark_node(self, node_id: str) -> bool:
        """Uncordon a node; False when it was neither cordoned nor draining."""
        with self._db.write() as conn:
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
        with self._db.write() as conn:
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

    # Settings

    def get_setting(self, key: str) -> str | None:
        """A setting's value, or None."""
        with self._db.read() as conn:
            return _settings.get_setting(conn, key)

    def set_setting(self, key: str, value: str) -> None:
        """Set (or replace) a setting."""
        with self._db.write() as conn:
            _settings.set_setting(conn, key, value)

    # Credentials and node trust

    def add_credential(
        self,
        kind: CredentialKind,
        credential_id: str,
        *,
        secret_sha256: str,
        description: str,
        expires_at: float | None,
    ) -> CredentialRow:
        """Record a join token or API key by the SHA-256 of its secret."""
        with self._db.write() as conn:
            return _credentials.add_credential(
                conn,
                kind,
                credential_id,
                secret_sha256=secret_sha256,
                description=description,
                now=self._clock(),
                expires_at=expires_at,
            )

    def credential(self, kind: CredentialKind, credential_id: str) -> CredentialRow | None:
        """One join token or API key, or None."""
        with self._db.read() as conn:
            return _credentials.credential(conn, kind, credential_id)

    def credentials(self, kind: CredentialKind) -> list[CredentialRow]:
        """Every join token or every API key, oldest first."""
        with self._db.read() as conn:
            return _credentials.credentials(conn, kind)

    def revoke_credential(self, kind: CredentialKind, credential_id: str) -> bool:
        """Revoke a join token or API key; False when unknown or revoked already."""
        with self._db.write() as conn:
            return _credentials.revoke_credential(conn, kind, credential_id, self._clock())

    def mark_credential_used(self, kind: CredentialKind, credential_id: str) -> None:
        """Note that a credential was just used."""
        with self._db.write() as conn:
            _credentials.mark_used(conn, kind, credential_id, self._clock())

    def add_certificate(self, serial: int, node_id: str, not_after: float) -> None:
        """Record a node certificate the cluster CA issued."""
        with self._db.write() as conn:
            _credentials.add_certificate(
                conn, serial, node_id, issued_at=self._clock(), not_after=not_after
            )

    def certificate_revoked(self, serial: int) -> bool | None:
        """Whether an issued certificate is revoked (None: never issued here)."""
        with self._db.read() as conn:
            return _credentials.certificate_revoked(conn, serial)

    def revoke_node(self, node_id: str, reason: str) -> int:
        """Revoke a node and its certificates; returns how many certificates."""
        with self._db.write() as conn:
            return _credentials.revoke_node(conn, node_id, reason, self._clock())

    def live_certificate_until(self, node_id: str) -> float | None:
        """When the node's latest valid certificate expires (None: it holds none)."""
        with self._db.read() as conn:
            return _credentials.live_certificate_until(conn, node_id, self._clock())

    def revoked_nodes(self) -> dict[str, str]:
        """Revoked node id → reason."""
        with self._db.read() as conn:
            return _credentials.revoked_nodes(conn)
