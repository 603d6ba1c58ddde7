"""The leader term kept in a SQLite store: one higher each time a controller takes the lead.

Nodes keep the highest term they have seen and refuse pushes from a lower one,
so each start of the controller must come with a term above all earlier ones,
and above what any node reports (a store restored from a backup lags behind).
"""

from __future__ import annotations

import sqlite3


def check_floor(floor: int) -> None:
    """ValueError when `floor` is negative."""
    if floor < 0:
        raise ValueError(f"a term floor must not be negative, not {floor}")


def begin_term(conn: sqlite3.Connection, floor: int = 0) -> int:
    """Set the term to one above both itself and `floor`; return it."""
    check_floor(floor)
    conn.execute("UPDATE leader_term SET value = max(value, ?) + 1 WHERE id = 1", (floor,))
    return current_term(conn)


def current_term(conn: sqlite3.Connection) -> int:
    """The last term taken (0: none yet)."""
    (term,) = conn.execute("SELECT value FROM leader_term WHERE id = 1").fetchone()
    return int(term)
