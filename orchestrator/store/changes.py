"""Telling interested parts of the controller which areas of the store changed."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Literal

log = logging.getLogger(__name__)

ChangeArea = Literal[
    "revisions", "marks", "credentials", "nodes", "assignment", "routes", "settings", "events"
]
"""What a change touched: a `StateStore.on_change` callback receives a set of these."""

ChangeCallback = Callable[[set[str]], None]


class ChangeListeners:
    """Callbacks registered with `on_change`, called with the areas of each change."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._callbacks: list[ChangeCallback] = []

    def add(self, callback: ChangeCallback) -> None:
        """Call `callback` after every later change."""
        with self._lock:
            self._callbacks.append(callback)

    def notify(self, areas: Iterable[ChangeArea]) -> None:
        """Call every callback with `areas` (nothing when empty).

        A failing callback is logged and does not keep the others from running:
        the change is already stored, whatever a listener makes of it.
        """
        changed: set[str] = set(areas)
        if not changed:
            return
        with self._lock:
            callbacks = list(self._callbacks)
        for callback in callbacks:
            try:
                callback(set(changed))
            except Exception:
                log.exception("a store change listener failed on %s", sorted(changed))
