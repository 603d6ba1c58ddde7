"""The store's schema, as an ordered list of steps: schema version N is `MIGRATIONS[N - 1]`.

A step is applied once, in its own transaction together with the new version
number, so a controller killed mid-upgrade reopens at the previous version and
simply runs the step again. A published step is never edited: a change to the
schema is one more entry at the end.
"""

from __future__ import annotations

from dataclasses import dataclass

APPLICATION_ID = 0x45466C74
"""Stamped in the SQLite header (`PRAGMA application_id`, "EFlt") to recognise our files."""


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema step: SQL statements run in order inside one transaction."""

    summary: str
    statements: tuple[str, ...]


_CORE = Migration(
    summary="identity, settings, deployments and revisions, nodes, assignment",
    statements=(
        # Identity lives apart from settings so a setting can never overwrite it.
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT",
        "CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT",
        """
        CREATE TABLE deployments (
            name TEXT PRIMARY KEY,
            current_revision INTEGER NOT NULL,
            deleted INTEGER NOT NULL DEFAULT 0 CHECK (deleted IN (0, 1)),
            updated_at REAL NOT NULL,
            -- Deferred: the deployment row and its new revision are written in one
            -- transaction, and the pair is checked at commit.
            FOREIGN KEY (name, current_revision) REFERENCES revisions (deployment, number)
                DEFERRABLE INITIALLY DEFERRED
        ) STRICT
        """,
        """
        CREATE TABLE revisions (
            deployment TEXT NOT NULL REFERENCES deployments (name)
                DEFERRABLE INITIALLY DEFERRED,
            number INTEGER NOT NULL CHECK (number >= 1),
            applied_at REAL NOT NULL,
            source TEXT NOT NULL,
            manifest TEXT NOT NULL,
            desired_json TEXT NOT NULL,
            digest TEXT NOT NULL,
            cause TEXT NOT NULL,
            PRIMARY KEY (deployment, number)
        ) STRICT
        """,
        """
        CREATE TABLE nodes (
            node_id TEXT PRIMARY KEY,
            address TEXT NOT NULL,
            discovered_by TEXT NOT NULL CHECK (discovered_by IN ('mdns', 'static', 'manifest')),
            labels_json TEXT NOT NULL,
            first_seen REAL NOT NULL,
            last_seen REAL NOT NULL
        ) STRICT
        """,
        """
        CREATE TABLE assignment (
            node_id TEXT PRIMARY KEY,
            generation INTEGER NOT NULL CHECK (generation >= 1),
            desired_json TEXT NOT NULL,
            updated_at REAL NOT NULL
        ) STRICT
        """,
        # One row: the single counter every generation is drawn from.
        """
        CREATE TABLE generation_counter (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            value INTEGER NOT NULL CHECK (value >= 0)
        ) STRICT
        """,
        "INSERT INTO generation_counter (id, value) VALUES (1, 0)",
        f"PRAGMA application_id = {APPLICATION_ID}",
    ),
)

_EVENTS = Migration(
    summary="event log",
    statements=(
        # AUTOINCREMENT: ids are never reused after trimming, so a watcher that
        # resumes "after id N" never skips or repeats an event.
        """
        CREATE TABLE events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            time REAL NOT NULL,
            severity TEXT NOT NULL CHECK (severity IN ('info', 'warning', 'error')),
            reason TEXT NOT NULL,
            object TEXT NOT NULL,
            node_id TEXT NOT NULL,
            message TEXT NOT NULL
        ) STRICT
        """,
        "CREATE INDEX events_by_object ON events (object, id)",
    ),
)

_TRUST = Migration(
    summary="join tokens and API keys (hashed), node certificates, revoked nodes",
    statements=(
        """
        CREATE TABLE credentials (
            kind TEXT NOT NULL CHECK (kind IN ('join-token', 'api-key')),
            id TEXT NOT NULL,
            secret_sha256 TEXT NOT NULL,
            description TEXT NOT NULL,
            created_at REAL NOT NULL,
            expires_at REAL,
            revoked_at REAL,
            last_used_at REAL,
            PRIMARY KEY (kind, id)
        ) STRICT
        """,
        """
        CREATE TABLE node_certificates (
            serial TEXT PRIMARY KEY,
            node_id TEXT NOT NULL,
            issued_at REAL NOT NULL,
            not_after REAL NOT NULL,
            revoked_at REAL
        ) STRICT
        """,
        "CREATE INDEX node_certificates_by_node ON node_certificates (node_id)",
        """
        CREATE TABLE revoked_nodes (
            node_id TEXT PRIMARY KEY,
            revoked_at REAL NOT NULL,
            reason TEXT NOT NULL
        ) STRICT
        """,
    ),
)

_MAINTENANCE = Migration(
    summary="cordoned and draining nodes",
    statements=(
        """
        CREATE TABLE node_marks (
            node_id TEXT PRIMARY KEY,
            mark TEXT NOT NULL CHECK (mark IN ('cordoned', 'draining')),
            reason TEXT NOT NULL,
            since REAL NOT NULL,
            drained_at REAL
        ) STRICT
        """,
    ),
)

_ROUTES = Migration(
    summary="routing table generation",
    statements=(
        # One row: the generation of the last routing table made, and what it said.
        """
        CREATE TABLE routes (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            generation INTEGER NOT NULL CHECK (generation >= 0),
            content_key TEXT NOT NULL
        ) STRICT
        """,
        "INSERT INTO routes (id, generation, content_key) VALUES (1, 0, '')",
    ),
)

_TERMS = Migration(
    summary="leader term",
    statements=(
        # One row: the leader term, one higher each time a controller starts on this
        # store. Nodes refuse pushes from a term lower than one they have seen.
        """
        CREATE TABLE leader_term (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            value INTEGER NOT NULL CHECK (value >= 0)
        ) STRICT
        """,
        "INSERT INTO leader_term (id, value) VALUES (1, 0)",
    ),
)

_MEMBERS = Migration(
    summary="controller members",
    statements=(
        # Each controller refreshes its row every few seconds; stale rows are skipped
        # when read, not deleted.
        """
        CREATE TABLE controller_members (
            controller_id TEXT PRIMARY KEY,
            address TEXT NOT NULL,
            role TEXT NOT NULL,
            seen_at REAL NOT NULL
        ) STRICT
        """,
    ),
)

MIGRATIONS: tuple[Migration, ...] = (
    _CORE,
    _EVENTS,
    _TRUST,
    _MAINTENANCE,
    _ROUTES,
    _TERMS,
    _MEMBERS,
)
