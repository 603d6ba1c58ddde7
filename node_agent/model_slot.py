"""One wanted model on the node and what is known about it right now."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Literal

from edgefleet_contract.desired import ModelWant
from node_agent.model_delivery import Delivery
from node_agent.runtimes.base import ModelSource

ModelState = Literal["pending", "loading", "ready", "unloading", "failed"]


@dataclass(slots=True)
class ModelSlot:
    """One wanted model and what is known about it right now."""

    want: ModelWant
    state: ModelState = "pending"
    reason: str = ""
    runtime: str = ""
    source: ModelSource | None = None
    memory_bytes: int = 0
    progress: float = 0.0
    last_used: float = field(default_factory=time.monotonic)
    in_use: int = 0
    failures: int = 0
    counted: bool = False
    """Its memory counts against the budget: admitted to load, loaded, or restarting."""
    task: asyncio.Task[None] | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    delivery: Delivery = field(default_factory=Delivery)

    def expected_bytes(self) -> int:
        """Memory it takes: measured once loaded, else what the manifest or catalog says."""
        if self.memory_bytes:
            return self.memory_bytes
        return self.source.memory_bytes if self.source else self.want.memory_bytes
