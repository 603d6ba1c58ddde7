"""The stored event log: numbered, oldest trimmed so the file stays bounded."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Literal, cast, get_args

Severity = Literal["info", "warning", "error"]

DEFAULT_MAX_EVENTS = 10_000


@dataclass(frozen=True, slots=True)
class EventRow:
    """One stored event."""

    id: int
    """Increases with every event and is never reused, so a reader can resume after it."""
    time: float
    severity: Severity
    reason: str
    """One word, e.g. `NodeReady`."""
    object: str
    """What it is about, e.g. `node/edge-1`."""
    node_id: str
    """The node involved, or empty."""
    message: str


_COLUMNS = "id, time, severity, reason, object, node_id, message"


def add_event(
    conn: sqlite3.Connection,
    *,
    severity: Severity,
    reason: str,
    object: str,
    node_id: str,
    message: str,
    now: float,
    keep: int = DEFAULT_MAX_EVENTS,
) -> EventRow:
    """Append an event, trimming the oldest so that at most `keep` remain."""
    check_event(severity, reason, keep)
    cursor = conn.execute(
        "INSERT INTO events (time, severity, reason, object, node_id, message)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (now, severity, reason, object, node_id, message),
    )
    event_id = cursor.lastrowid
    assert event_id is not None  # an INSERT into a rowid table always sets it
    _trim(conn, newest=event_id, keep=keep)
    return EventRow(event_id, now, severity, reason, object, node_id, message)


def check_event(severity: str, reason: str, keep: int) -> None:
    """ValueError unless the event can be stored (and `keep` is a usable limit)."""
    if severity not in get_args(Severity):
        raise ValueError(f"severity must be one of {get_args(Severity)}")
    if not reason or any(c.isspace() for c in reason):
        raise ValueError(f"an event reason is one word, not {reason!r}")
    if keep < 1:
        raise ValueError("keep must be at least 1")


def events(
    conn: sqlite3.Connection,
    *,
    after_id: int = 0,
    limit: int | None = None,
    object: str | None = None,
) -> list[EventRow]:
    """Events after `after_id` (about `object` if given), oldest first.

    With `limit`, the newest `limit` of them, still oldest first.
    """
    where = "id > ?"
    params: list[str | int] = [after_id]
    if object is not None:
        where += " AND object = ?"
        params.append(object)
    query = f"SELECT {_COLUMNS} FROM events WHERE {where} ORDER BY id"
    if limit is not None:
        if limit < 0:
            raise ValueError("limit must not be negative")
        query = (
            f"SELECT * FROM (SELECT {_COLUMNS} FROM events WHERE {where}"
            " ORDER BY id DESC LIMIT ?) ORDER BY id"
        )
        params.append(limit)
    return [_event(row) for row in conn.execute(query, params)]


def _trim(conn: sqlite3.Connection, *, newest: int, keep: int) -> None:
    # Ids are only ever appended, so newest - oldest + 1 bounds the row count
    # without counting rows. Trimming a tenth below `keep` means the delete runs
    # once per `keep // 10` events rather than on every insert.
    (oldest,) = conn.execute("SELECT min(id) FROM events").fetchone()
    if newest - oldest + 1 > keep:
        conn.execute("DELETE FROM events WHERE id <= ?", (newest - keep + keep // 10,))


def _event(row: tuple[int, float, str, str, str, str, str]) -> EventRow:
    event_id, time, severity, reason, obj, node_id, message = row
    return EventRow(event_id, time, cast(Severity, severity), reason, obj, node_id, message)
