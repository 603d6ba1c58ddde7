"""Deployments and every manifest revision applied to them, kept for diff and rollback.

A deployment's revisions are numbered from 1 and never reused or removed:
deleting a deployment only marks it, so applying it again continues the
numbering and an old revision can still be rolled back to.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Revision:
    """One applied manifest of one deployment."""

    deployment: str
    number: int
    applied_at: float
    source: str
    """Where the manifest came from (a file path, `-` for stdin); a rollback keeps the
    source of the revision it restores."""
    manifest: str
    """The manifest text as applied."""
    desired_json: str
    """The normalized desired state computed from the manifest."""
    digest: str
    cause: str
    """Why it was applied, for people: `apply`, or `rollback to N`."""


@dataclass(frozen=True, slots=True)
class DeploymentRow:
    """A deployment the controller knows, deleted or not."""

    name: str
    current_revision: int
    deleted: bool
    updated_at: float


_COLUMNS = "deployment, number, applied_at, source, manifest, desired_json, digest, cause"
_SELECT = f"SELECT {_COLUMNS} FROM revisions"


def add_revision(
    conn: sqlite3.Connection,
    deployment: str,
    *,
    source: str,
    manifest: str,
    desired_json: str,
    digest: str,
    cause: str,
    now: float,
) -> Revision:
    """Store the next revision of `deployment` and make it current (and not deleted)."""
    check_deployment_name(deployment)
    (previous,) = conn.execute(
        "SELECT coalesce(max(number), 0) FROM revisions WHERE deployment = ?", (deployment,)
    ).fetchone()
    revision = Revision(
        deployment=deployment,
        number=int(previous) + 1,
        applied_at=now,
        source=source,
        manifest=manifest,
        desired_json=desired_json,
        digest=digest,
        cause=cause,
    )
    conn.execute(
        "INSERT INTO deployments (name, current_revision, deleted, updated_at) VALUES (?, ?, 0, ?)"
        " ON CONFLICT (name) DO UPDATE SET current_revision = excluded.current_revision,"
        " deleted = 0, updated_at = excluded.updated_at",
        (deployment, revision.number, now),
    )
    conn.execute(
        f"INSERT INTO revisions ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            revision.deployment,
            revision.number,
            revision.applied_at,
            revision.source,
            revision.manifest,
            revision.desired_json,
            revision.digest,
            revision.cause,
        ),
    )
    return revision


def check_deployment_name(deployment: str) -> None:
    """ValueError unless `deployment` can name a deployment."""
    if not deployment:
        raise ValueError("a deployment needs a name")


def current(conn: sqlite3.Connection) -> list[Revision]:
    """The current revision of each deployment that is not deleted, by name."""
    rows = conn.execute(
        f"{_SELECT} WHERE (deployment, number) IN"
        " (SELECT name, current_revision FROM deployments WHERE deleted = 0)"
        " ORDER BY deployment"
    )
    return [Revision(*row) for row in rows]


def revision(conn: sqlite3.Connection, deployment: str, number: int) -> Revision | None:
    """One revision, or None if that deployment never had it."""
    row = conn.execute(
        f"{_SELECT} WHERE deployment = ? AND number = ?", (deployment, number)
    ).fetchone()
    return None if row is None else Revision(*row)


def revisions(conn: sqlite3.Connection, deployment: str) -> list[Revision]:
    """Every revision of `deployment`, newest first (empty if unknown)."""
    rows = conn.execute(f"{_SELECT} WHERE deployment = ? ORDER BY number DESC", (deployment,))
    return [Revision(*row) for row in rows]


def deployments(conn: sqlite3.Connection) -> list[DeploymentRow]:
    """Every deployment ever applied, deleted ones included, by name."""
    rows = conn.execute(
        "SELECT name, current_revision, deleted, updated_at FROM deployments ORDER BY name"
    )
    return [
        DeploymentRow(name=name, current_revision=number, deleted=bool(deleted), updated_at=at)
        for name, number, deleted, at in rows
    ]


def delete_deployment(conn: sqlite3.Connection, name: str, *, now: float) -> bool:
    """Mark `name` deleted, keeping its revisions; False if unknown or already deleted."""
    cursor = conn.execute(
        "UPDATE deployments SET deleted = 1, updated_at = ? WHERE name = ? AND deleted = 0",
        (now, name),
    )
    return cursor.rowcount == 1
