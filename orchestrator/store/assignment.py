"""What each node should run, numbered by generation.

Every generation comes from one counter for the whole cluster, so a number is
never handed out twice, not even to two nodes or across a node forgotten and
found again: a node can always tell newer instructions from stale ones.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class NodeAssignment:
    """The desired state last saved for one node."""

    node_id: str
    generation: int
    desired_json: str
    updated_at: float


def assignment(conn: sqlite3.Connection) -> dict[str, NodeAssignment]:
    """The saved desired state of every node, by node id."""
    rows = conn.execute(
        "SELECT node_id, generation, desired_json, updated_at FROM assignment ORDER BY node_id"
    )
    return {row[0]: NodeAssignment(*row) for row in rows}


def save_assignment(
    conn: sqlite3.Connection,
    changed: Mapping[str, str],
    *,
    now: float,
    force: Collection[str] = (),
) -> dict[str, int]:
    """Save each node's desired state; a node whose state differs gets a new generation.

    A node in `force` (which must also be in `changed`) gets one even if its
    state is the same. Returns the new generation of each node that got one.
    Nodes not in `changed` keep what they have.
    """
    forced = check_forced(changed, force)
    counter = last_generation(conn)
    saved: dict[str, int] = {}
    # Sorted: the same batch always numbers its nodes in the same order.
    for node_id in sorted(changed):
        desired_json = changed[node_id]
        row = conn.execute(
            "SELECT desired_json FROM assignment WHERE node_id = ?", (node_id,)
        ).fetchone()
        if row is not None and row[0] == desired_json and node_id not in forced:
            continue
        counter += 1
        conn.execute(
            "INSERT INTO assignment (node_id, generation, desired_json, updated_at)"
            " VALUES (?, ?, ?, ?) ON CONFLICT (node_id) DO UPDATE SET"
            " generation = excluded.generation, desired_json = excluded.desired_json,"
            " updated_at = excluded.updated_at",
            (node_id, counter, desired_json, now),
        )
        saved[node_id] = counter
    if saved:
        conn.execute("UPDATE generation_counter SET value = ? WHERE id = 1", (counter,))
    return saved


def check_forced(changed: Collection[str], force: Collection[str]) -> set[str]:
    """The forced nodes; ValueError when one of them is not among the changed."""
    forced = set(force)
    if unknown := forced - set(changed):
        raise ValueError(f"forced nodes must be in changed: {sorted(unknown)}")
    return forced


def last_generation(conn: sqlite3.Connection) -> int:
    """The counter: the highest generation handed out or raised to."""
    (value,) = conn.execute("SELECT value FROM generation_counter WHERE id = 1").fetchone()
    return int(value)


def raise_generation_floor(conn: sqlite3.Connection, floor: int) -> int:
    """Make the counter at least `floor`; return its value."""
    conn.execute("UPDATE generation_counter SET value = max(value, ?) WHERE id = 1", (floor,))
    return last_generation(conn)


def clear_assignment(conn: sqlite3.Connection, node_id: str) -> bool:
    """Drop a node's saved desired state; False if it had none."""
    cursor = conn.execute("DELETE FROM assignment WHERE node_id = ?", (node_id,))
    return cursor.rowcount == 1
