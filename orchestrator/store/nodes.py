"""The nodes the controller knows: how each was found, where it is, when it was last seen."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal, cast, get_args

DiscoveredBy = Literal["mdns", "static", "manifest"]


@dataclass(frozen=True, slots=True)
class NodeRow:
    """A known node."""

    node_id: str
    address: str
    """host:port of its node API."""
    discovered_by: DiscoveredBy
    labels: Mapping[str, str]
    first_seen: float
    last_seen: float


_SELECT = "SELECT node_id, address, discovered_by, labels_json, first_seen, last_seen FROM nodes"


def upsert_node(
    conn: sqlite3.Connection,
    node_id: str,
    *,
    address: str,
    discovered_by: DiscoveredBy,
    labels: Mapping[str, str],
    last_seen: float,
) -> NodeRow:
    """Record a node, or update what is known of it (its first sighting is kept)."""
    check_node(node_id, discovered_by)
    labels_json = json.dumps(dict(sorted(labels.items())), separators=(",", ":"))
    conn.execute(
        "INSERT INTO nodes (node_id, address, discovered_by, labels_json, first_seen, last_seen)"
        " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (node_id) DO UPDATE SET"
        " address = excluded.address, discovered_by = excluded.discovered_by,"
        " labels_json = excluded.labels_json, last_seen = excluded.last_seen",
        (node_id, address, discovered_by, labels_json, last_seen, last_seen),
    )
    row = conn.execute(f"{_SELECT} WHERE node_id = ?", (node_id,)).fetchone()
    return _node(row)


def check_node(node_id: str, discovered_by: str) -> None:
    """ValueError unless the id and discovery source can be recorded."""
    if not node_id:
        raise ValueError("a node needs an id")
    if discovered_by not in get_args(DiscoveredBy):
        raise ValueError(f"discovered_by must be one of {get_args(DiscoveredBy)}")


def nodes(conn: sqlite3.Connection) -> list[NodeRow]:
    """Every known node, by id."""
    return [_node(row) for row in conn.execute(f"{_SELECT} ORDER BY node_id")]


def forget_node(conn: sqlite3.Connection, node_id: str) -> bool:
    """Remove a node; False if it was not known."""
    cursor = conn.execute("DELETE FROM nodes WHERE node_id = ?", (node_id,))
    return cursor.rowcount == 1


def _node(row: tuple[str, str, str, str, float, float]) -> NodeRow:
    node_id, address, discovered_by, labels_json, first_seen, last_seen = row
    labels: dict[str, str] = json.loads(labels_json)
    return NodeRow(
        node_id=node_id,
        address=address,
        discovered_by=cast(DiscoveredBy, discovered_by),
        labels=MappingProxyType(labels),
        first_seen=first_seen,
        last_seen=last_seen,
    )
