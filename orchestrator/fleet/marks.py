"""Cordoned and draining nodes as the fleet holds them: in memory for every scheduling
pass, and in the store (once given one) so that a restarted controller keeps them."""

from __future__ import annotations

import time
from dataclasses import replace

from orchestrator.store import Mark, NodeMarkRow, StateStore, StoreError


class NodeMarks:
    """Every node's mark, by id; written through to the store when there is one."""

    def __init__(self, store: StateStore | None = None) -> None:
        self._store = store
        self._marks: dict[str, NodeMarkRow] = store.node_marks() if store is not None else {}

    def reload(self) -> None:
        """Read the marks again: another controller sharing the store changed them."""
        if self._store is not None:
            self._marks = self._store.node_marks()

    def get(self, node_id: str) -> NodeMarkRow | None:
        """The node's mark; None when it has none."""
        return self._marks.get(node_id)

    def all(self) -> dict[str, NodeMarkRow]:
        """Every marked node, by id."""
        return dict(sorted(self._marks.items()))

    def set(self, node_id: str, mark: Mark, reason: str) -> NodeMarkRow:
        """Mark the node (replacing its mark)."""
        if self._store is not None:
            row = self._store.mark_node(node_id, mark, reason=reason)
        else:
            row = NodeMarkRow(node_id, mark, reason, time.time())
        self._marks[node_id] = row
        return row

    def clear(self, node_id: str) -> bool:
        """Lift the node's mark; False when it had none."""
        if self._store is not None:
            self._store.unmark_node(node_id)
        return self._marks.pop(node_id, None) is not None

    def set_drained(self, node_id: str) -> NodeMarkRow | None:
        """Note that the draining node is empty; None when it is not draining."""
        row = self._marks.get(node_id)
        if row is None or row.mark != "draining":
            return None
        if self._store is not None:
            try:
                stored = self._store.mark_drained(node_id)
            except StoreError:
                # Not the leader (which records it), or the store is out of reach: the
                # next status after the leader's pass, or after the store is back, tells.
                return None
            row = stored if stored is not None else replace(row, drained_at=time.time())
        else:
            row = replace(row, drained_at=time.time())
        self._marks[node_id] = row
        return row
