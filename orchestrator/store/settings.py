"""Small named values: the controller's identity (`meta`) and settings for later features."""

from __future__ import annotations

import sqlite3


def get_setting(conn: sqlite3.Connection, key: str) -> str | None:
    """A setting's value, or None if it was never set."""
    return _get(conn, "settings", key)


def set_setting(conn: sqlite3.Connection, key: str, value: str) -> None:
    """Set (or replace) a setting."""
    _set(conn, "settings", key, value)


def get_meta(conn: sqlite3.Connection, key: str) -> str | None:
    """An identity value (`controller_id`, `cluster_name`), or None."""
    return _get(conn, "meta", key)


def set_meta(conn: sqlite3.Connection, key: str, value: str) -> None:
    """Set an identity value."""
    _set(conn, "meta", key, value)


def _get(conn: sqlite3.Connection, table: str, key: str) -> str | None:
    row = conn.execute(f"SELECT value FROM {table} WHERE key = ?", (key,)).fetchone()
    return None if row is None else str(row[0])


def _set(conn: sqlite3.Connection, table: str, key: str, value: str) -> None:
    if not key:
        raise ValueError("a setting needs a key")
    conn.execute(
        f"INSERT INTO {table} (key, value) VALUES (?, ?)"
        " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (key, value),
    )
