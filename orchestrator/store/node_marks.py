"""Nodes an operator took out of scheduling: cordoned (no new work) or draining (emptied).

A mark outlives the node's connection and the controller's restarts: it is the
operator's word, and only `edgectl node uncordon` lifts it.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Literal, cast, get_args

Mark = Literal["cordoned", "draining"]
"""`cordoned`: no new work goes there; `draining`: cordoned, and its work moves away."""


@dataclass(frozen=True, slots=True)
class NodeMarkRow:
    """One marked node."""

    node_id: str
    mark: Mark
    reason: str
    """What the operator gave (may be empty)."""
    since: float
    """When the node got this mark."""
    drained_at: float | None = None
    """When a draining node was first seen empty (None: not yet, or not draining)."""


_SELECT = "SELECT node_id, mark, reason, since, drained_at FROM node_marks"


def set_mark(
    conn: sqlite3.Connection, node_id: str, mark: Mark, *, reason: str, now: float
) -> NodeMarkRow:
    """Mark a node (replacing its mark, and forgetting when it was drained)."""
    check_mark(node_id, mark)
    conn.execute(
        "INSERT INTO node_marks (node_id, mark, reason, since, drained_at)"
        " VALUES (?, ?, ?, ?, NULL) ON CONFLICT (node_id) DO UPDATE SET"
        " mark = excluded.mark, reason = excluded.reason, since = excluded.since,"
        " drained_at = NULL",
        (node_id, mark, reason, now),
    )
    return NodeMarkRow(node_id, mark, reason, now)


def check_mark(node_id: str, mark: str) -> None:
    """ValueError unless `mark` can be put on `node_id`."""
    if not node_id:
        raise ValueError("a node needs an id")
    if mark not in get_args(Mark):
        raise ValueError(f"mark must be one of {get_args(Mark)}, not {mark!r}")


def set_drained(conn: sqlite3.Connection, node_id: str, *, now: float) -> NodeMarkRow | None:
    """Note that a draining node was seen empty; None when it is not draining."""
    cursor = conn.execute(
        "UPDATE node_marks SET drained_at = ? WHERE node_id = ? AND mark = 'draining'",
        (now, node_id),
    )
    return mark_of(conn, node_id) if cursor.rowcount == 1 else None


def clear_mark(conn: sqlite3.Connection, node_id: str) -> bool:
    """Lift a node's mark; False when it had none."""
    return conn.execute("DELETE FROM node_marks WHERE node_id = ?", (node_id,)).rowcount == 1


def mark_of(conn: sqlite3.Connection, node_id: str) -> NodeMarkRow | None:
    """One node's mark, or None."""
    row = conn.execute(f"{_SELECT} WHERE node_id = ?", (node_id,)).fetchone()
    return None if row is None else _row(row)


def marks(conn: sqlite3.Connection) -> dict[str, NodeMarkRow]:
    """Every marked node, by id."""
    return {row[0]: _row(row) for row in conn.execute(f"{_SELECT} ORDER BY node_id")}


def _row(row: tuple[str, str, str, float, float | None]) -> NodeMarkRow:
    node_id, mark, reason, since, drained_at = row
    return NodeMarkRow(node_id, cast(Mark, mark), reason, since, drained_at)
