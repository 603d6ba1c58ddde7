"""Small named values: the controller's identity (`meta`) and settings for later features."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

from edgefleet_common.cluster import DEFAULT_CLUSTER
from orchestrator.store.errors import StoreError


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


def identity(conn: sqlite3.Connection, cluster_name: str | None, path: Path) -> tuple[str, str]:
    """(controller id, cluster name) of the store, made on first use.

    `cluster_name` names a new store; for an existing one it must match (None
    accepts whatever is stored).
    """
    controller_id = get_meta(conn, "controller_id")
    if controller_id is None:
        controller_id = str(uuid.uuid4())
        set_meta(conn, "controller_id", controller_id)
    stored_name = get_meta(conn, "cluster_name")
    if stored_name is None:
        stored_name = cluster_name or DEFAULT_CLUSTER
        set_meta(conn, "cluster_name", stored_name)
    elif cluster_name is not None and cluster_name != stored_name:
        raise StoreError(
            f"the store at {path} belongs to cluster {stored_name!r}, not "
            f"{cluster_name!r}; use that cluster's data folder or drop the name"
        )
    return controller_id, stored_name


def _get(conn: sqlite3.Connection, table: str, key: str) -> str | None:
    row = conn.execute(f"SELECT value FROM {table} WHERE key = ?", (key,)).fetchone()
    return None if row is None else str(row[0])


def check_key(key: str) -> None:
    """ValueError unless `key` can name a setting."""
    if not key:
        raise ValueError("a setting needs a key")


def _set(conn: sqlite3.Connection, table: str, key: str, value: str) -> None:
    check_key(key)
    conn.execute(
        f"INSERT INTO {table} (key, value) VALUES (?, ?)"
        " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (key, value),
    )


def set_setting_if_absent(conn: sqlite3.Connection, key: str, value: str) -> tuple[str, bool]:
    """Set a setting unless it has a value; returns (the value in force, whether it was set)."""
    check_key(key)
    cursor = conn.execute(
        "INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
        (key, value),
    )
    if cursor.rowcount == 1:
        return value, True
    stored = get_setting(conn, key)
    assert stored is not None  # the insert found it
    return stored, False
