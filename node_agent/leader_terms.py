"""Fencing by leader term: a node obeys only the newest leader among its controllers.

Every controller that leads says its leader term with each push and status stream.
The node keeps the highest term it has seen, on disk (so a restart does not forget
it), and refuses desired states and routing tables pushed with an older term, or
with none (0) once it has seen one: a controller that lost its leadership without
knowing it can no longer change what the node runs. A status stream opened with
term 0 (a standby controller observing) changes nothing.

This is not the per-target generation fencing of `fencing.py`, which refuses requests
routed with an outdated routing table.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from pathlib import Path

from edgefleet_contract.wire import NEWER_LEADER
from node_agent.errors import StaleLeaderTerm
from node_agent.state_file import set_aside, write_atomic

log = logging.getLogger(__name__)

LEADER_TERM_FILE = "leader-term.json"


class LeaderTerms:
    """The highest leader term a node has seen, and the pushes it refused for an older one."""

    def __init__(self, path: Path, term: int, on_change: Callable[[], None] | None) -> None:
        self.path = path
        self.term = term
        """The highest leader term seen; 0: none yet (any push is taken)."""
        self.refused = 0
        """Pushes refused for a stale leader term since the node started."""
        self._on_change = on_change
        self._lock = asyncio.Lock()

    @classmethod
    def load(cls, data_dir: Path, on_change: Callable[[], None] | None = None) -> LeaderTerms:
        """The term saved in `data_dir` (0 when none, or when the file is unreadable: set
        aside and logged). `on_change()` runs when the term rises or a push is refused."""
        path = data_dir / LEADER_TERM_FILE
        return cls(path, read_term(path), on_change)

    async def admit(self, term: int, controller_id: str, what: str) -> None:
        """Let a push of `what` (e.g. "a desired state") at leader `term` through, raising
        the node's term when it is higher; StaleLeaderTerm (counted, logged, nothing else
        changed) when it is lower, or 0 once a term was seen."""
        if term < self.term or (term == 0 and self.term > 0):
            self.refused += 1
            log.warning(
                "push refused: it comes from an older leader",
                extra={
                    "controller": controller_id,
                    "pushed": what,
                    "push_term": term,
                    "leader_term": self.term,
                    "refused_pushes": self.refused,
                },
            )
            self._changed()
            raise StaleLeaderTerm(
                f"controller `{controller_id or '?'}` pushed {what} at leader term {term}, but "
                f"this node follows leader term {self.term}: {NEWER_LEADER}, so this push "
                "changes nothing (the controller that leads now sends the node's state)"
            )
        await self.observe(term, controller_id)

    async def observe(self, term: int, controller_id: str) -> None:
        """Follow leader `term` from now on if it is higher than the node's (saved first);
        a lower one, or 0 (an observer), changes nothing."""
        if term <= self.term:
            return
        async with self._lock:
            if term <= self.term:
                return
            before, self.term = self.term, term
            # In memory first: the node follows the new leader even if its disk fails.
            try:
                await asyncio.to_thread(write_term, self.path, term)
            except OSError as exc:
                log.error(
                    "cannot save the leader term; it is followed until the node restarts",
                    extra={"path": str(self.path), "leader_term": term, "error": str(exc)},
                )
        log.info(
            "following a new leader term",
            extra={"controller": controller_id, "leader_term": term, "before": before},
        )
        self._changed()

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change()


def read_term(path: Path) -> int:
    """The leader term saved at `path`; 0 when there is none or it cannot be read (an
    unreadable file is set aside for inspection, and logged)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return 0
    except OSError as exc:
        log.error(
            "cannot read the saved leader term; following none until a leader sends one",
            extra={"path": str(path), "error": str(exc)},
        )
        return 0
    try:
        term = json.loads(data)["leader_term"]
    except (ValueError, TypeError, KeyError):
        term = None
    if isinstance(term, int) and not isinstance(term, bool) and term >= 0:
        return term
    try:
        aside = set_aside(path)
    except OSError as exc:
        log.error(
            "the saved leader term is unreadable and cannot be set aside; following none "
            "until a leader sends one",
            extra={"path": str(path), "move_error": str(exc)},
        )
        return 0
    log.error(
        "the saved leader term is unreadable; following none until a leader sends one",
        extra={"path": str(aside)},
    )
    return 0


def write_term(path: Path, term: int) -> None:
    """Save `term` at `path`, atomically and durably."""
    write_atomic(path, json.dumps({"leader_term": term}).encode())
