"""`StateStore`: what the controller needs from its state store, whichever backend holds it."""

from __future__ import annotations

from orchestrator.store.sqlite_store import SqliteStore

StateStore = SqliteStore
