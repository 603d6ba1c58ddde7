"""What one node has been told to run, at which generation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, model_validator

from edgefleet_contract.frozen import Frozen

UINT32_MAX = 2**32 - 1
"""The most a uint32 field of the wire format holds."""


class ModelWant(Frozen):
    """A model this node must keep loaded."""

    alias: str = Field(min_length=1, max_length=128)
    runtime: str = ""
    source: str = ""
    quantization: str = ""
    memory_bytes: int = Field(0, ge=0)
    tasks: tuple[str, ...] = ()
    parallel: int = Field(0, ge=0, le=UINT32_MAX)
    """llama.cpp: requests served at once (slots); 0: the node's catalog decides."""
    context: int = Field(0, ge=0, le=UINT32_MAX)
    """llama.cpp: context tokens per slot; 0: the node's catalog decides."""


class AgentWant(Frozen):
    """An agent this node must host."""

    name: str = Field(min_length=1, max_length=128)
    model: str = Field(min_length=1, max_length=128)
    tools: tuple[str, ...] = ()
    instructions: str = ""
    tasks: tuple[str, ...] = ()
    tool_config: dict[str, dict[str, Any]] = Field(default_factory=dict)


class NodeLimits(Frozen):
    """Resource limits for this node; zero or None means unlimited."""

    max_memory_bytes: int = Field(0, ge=0)
    max_memory_fraction: float = Field(0.0, ge=0.0, le=1.0)
    """Share of the box's total memory models may use; 0: not set."""
    model_cache_bytes: int = Field(0, ge=0)
    max_concurrent_agents: int = Field(0, ge=0)
    max_queue_per_agent: int = Field(16, ge=1)
    auto_unload_idle_models: bool = False
    idle_timeout_s: float = Field(600.0, gt=0)

    def memory_budget(self, memory_total_bytes: int) -> int:
        """Bytes the node's models may take together on a box with that much memory;
        0: unlimited (or, with only a fraction set and the total unknown, cannot be told)."""
        bounds = [self.max_memory_bytes, self.model_cache_bytes]
        if self.max_memory_fraction and memory_total_bytes > 0:
            bounds.append(int(self.max_memory_fraction * memory_total_bytes))
        return min((b for b in bounds if b > 0), default=0)


class NodeDesired(Frozen):
    """The whole desired state of a node; a newer generation replaces an older one."""

    generation: int = Field(0, ge=0)
    controller_id: str = ""
    models: tuple[ModelWant, ...] = ()
    agents: tuple[AgentWant, ...] = ()
    limits: NodeLimits = NodeLimits()

    def content_key(self) -> str:
        """What the state asks for, without its generation or sender: two states with the
        same key run the same things (a JSON text, so it can be stored and compared)."""
        return self.model_dump_json(exclude={"generation", "controller_id"})

    @model_validator(mode="after")
    def _consistent(self) -> NodeDesired:
        aliases = [m.alias for m in self.models]
        if len(set(aliases)) != len(aliases):
            raise ValueError("a model alias appears twice")
        names = [a.name for a in self.agents]
        if len(set(names)) != len(names):
            raise ValueError("an agent name appears twice")
        for agent in self.agents:
            if agent.model not in aliases:
                raise ValueError(
                    f"agent `{agent.name}` needs model `{agent.model}`, which this state "
                    "does not load"
                )
        return self


ChangeAction = Literal["unchanged", "created", "updated", "removed"]


@dataclass(frozen=True, slots=True)
class ItemChange:
    """What a new desired state does to one model or agent of the old one."""

    kind: Literal["model", "agent"]
    name: str
    action: ChangeAction


def _changes(
    kind: Literal["model", "agent"],
    old: dict[str, Frozen],
    new: dict[str, Frozen],
) -> list[ItemChange]:
    found = [
        ItemChange(
            kind,
            name,
            "created" if name not in old else "unchanged" if old[name] == item else "updated",
        )
        for name, item in new.items()
    ]
    return found + [ItemChange(kind, name, "removed") for name in old if name not in new]


def compare(old: NodeDesired, new: NodeDesired) -> list[ItemChange]:
    """Per-item differences from `old` to `new`: models first, then agents."""
    return _changes(
        "model", {m.alias: m for m in old.models}, {m.alias: m for m in new.models}
    ) + _changes("agent", {a.name: a for a in old.agents}, {a.name: a for a in new.agents})
