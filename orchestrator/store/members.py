"""The controllers of a cluster: where each one's API listens, its role, when it last said so.

Every controller registers itself every few seconds; one not heard from for a
while has stopped (or lost the store) and is left out of the list.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass

DEFAULT_WITHIN_S = 30.0
"""Seconds since its last registration within which a controller counts as a member."""


@dataclass(frozen=True, slots=True)
class MemberRow:
    """A controller of the cluster, as it last registered."""

    controller_id: str
    address: str
    """host:port of its controller API."""
    role: str
    """What it said it was doing: `leader`, `standby` or `single`."""
    seen_at: float


def check_member(controller_id: str, within_s: float = DEFAULT_WITHIN_S) -> None:
    """ValueError unless `controller_id` names a controller and `within_s` is not negative."""
    if not controller_id:
        raise ValueError("a controller member needs an id")
    if within_s < 0:
        raise ValueError(f"within_s must not be negative, not {within_s!r}")


def seen_within(rows: Iterable[MemberRow], now: float, within_s: float) -> list[MemberRow]:
    """The rows seen in the last `within_s` seconds before `now`, by controller id."""
    check_member("-", within_s)
    recent = [row for row in rows if row.seen_at >= now - within_s]
    return sorted(recent, key=lambda row: row.controller_id)


def register_member(conn: sqlite3.Connection, row: MemberRow) -> None:
    """Record (or refresh) a controller's registration."""
    check_member(row.controller_id)
    conn.execute(
        "INSERT INTO controller_members (controller_id, address, role, seen_at)"
        " VALUES (?, ?, ?, ?) ON CONFLICT (controller_id) DO UPDATE SET"
        " address = excluded.address, role = excluded.role, seen_at = excluded.seen_at",
        (row.controller_id, row.address, row.role, row.seen_at),
    )


def members(conn: sqlite3.Connection) -> list[MemberRow]:
    """Every controller ever registered, by id."""
    rows = conn.execute(
        "SELECT controller_id, address, role, seen_at FROM controller_members"
        " ORDER BY controller_id"
    )
    return [MemberRow(*row) for row in rows]
