"""The routing table the node's gateway uses: the newest the controller pushed, kept on disk.

A table is taken only when it is newer than the one held: an older generation, or
the same one with other content, is refused (StaleGeneration); the same one with
the same content changes nothing. It is written atomically (temp file, fsync,
rename) before the push is answered, and read back at start, so a node that
restarts while its controller is away routes with what it last knew. Generation 0
means no table: the gateway then routes only to this node.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from pydantic import ValidationError

from edgefleet_common.pki import write_private
from edgefleet_contract.routing_table import RoutingTable
from edgefleet_contract.wire import validation_problems
from node_agent.errors import StaleGeneration
from node_agent.state_file import set_aside

log = logging.getLogger(__name__)

ROUTES_DIR = "routes"
ROUTES_FILE = "routing-table.json"


class RoutesStore:
    """The node's current routing table, and its copy on disk."""

    def __init__(
        self, data_dir: Path, on_change: Callable[[RoutingTable], None] | None = None
    ) -> None:
        """`on_change(table)` is called once a new table is in use."""
        # A folder of its own, private: the table lists the digests of the API keys.
        self.path = data_dir / ROUTES_DIR / ROUTES_FILE
        self.table = RoutingTable()
        self._on_change = on_change
        self._lock = asyncio.Lock()

    @property
    def generation(self) -> int:
        """Of the table in use; 0: none yet."""
        return self.table.generation

    async def restore(self) -> RoutingTable | None:
        """Take the saved table into use, if there is a readable one (at start)."""
        table = await asyncio.to_thread(self.read)
        if table is not None:
            self._use(table)
            log.info("routing table restored", extra={"routes_generation": table.generation})
        return table

    def read(self) -> RoutingTable | None:
        """The saved table, if there is a readable one (an unreadable one is set aside and
        logged: the node starts with none)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning(
                "cannot read the saved routing table",
                extra={"path": str(self.path), "error": str(exc)},
            )
            return None
        try:
            return RoutingTable.model_validate_json(data)
        except ValidationError as exc:
            self._set_aside(validation_problems(exc))
            return None

    async def apply(self, table: RoutingTable) -> bool:
        """Route with `table` from now on: saved first. False when it is the table in use
        already; StaleGeneration when it is older, or the same generation with other
        content."""
        async with self._lock:
            current = self.table
            if table.generation < current.generation:
                raise StaleGeneration(
                    f"routing table generation {table.generation} is older than the "
                    f"{current.generation} this node routes with"
                )
            if table.generation == current.generation:
                if table.content_key() != current.content_key():
                    raise StaleGeneration(
                        f"routing table generation {table.generation} was already applied "
                        "with other content; send a newer generation"
                    )
                return False
            await asyncio.to_thread(write_private, self.path, table.model_dump_json().encode())
            self._use(table)
        log.info(
            "routing table applied",
            extra={
                "routes_generation": table.generation,
                "targets": len(table.targets),
                "controller": table.controller_id,
            },
        )
        return True

    def _use(self, table: RoutingTable) -> None:
        self.table = table
        if self._on_change is not None:
            self._on_change(table)

    def _set_aside(self, reason: str) -> None:
        """Keep an unreadable file for inspection under a name of its own."""
        try:
            aside = set_aside(self.path)
        except OSError as exc:
            log.error(
                "the saved routing table is unreadable and cannot be set aside; starting "
                "without one",
                extra={"path": str(self.path), "error": reason, "move_error": str(exc)},
            )
            return
        log.error(
            "the saved routing table is unreadable; starting without one",
            extra={"path": str(aside), "error": reason},
        )
