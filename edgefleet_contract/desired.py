"""What one node has been told to run, at which generation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from edgefleet_common.pki import valid_node_id
from edgefleet_contract.frozen import Frozen
from edgefleet_contract.model_source import check_sha256

UINT32_MAX = 2**32 - 1
"""The most a uint32 field of the wire format holds."""
UINT64_MAX = 2**64 - 1
"""The most a uint64 field of the wire format holds."""
_PEERS_KEY = {"models": {"__all__": {"peers"}}}
"""What a state's content key leaves out besides its generation and sender."""


def check_address(address: str) -> str:
    """A `HOST:PORT` address as given (IPv6 hosts in brackets); ValueError says what is
    wrong."""
    host, sep, port = address.rpartition(":")
    bare = host.removeprefix("[").removesuffix("]")
    bracketed = host != bare
    if (
        not sep
        or not bare
        or not port.isascii()
        or not port.isdigit()
        or not 0 < int(port) < 65536
        or (":" in bare and not bracketed)
        or any(c.isspace() or c in "/[]@" for c in bare)
    ):
        raise ValueError(f"`{address}` is not an address; write HOST:PORT, e.g. 10.0.0.7:7443")
    return address


class BlobPeer(Frozen):
    """A node a model's blob can be fetched from."""

    node_id: str = Field(min_length=1, max_length=63)
    address: str = Field(min_length=1, max_length=300)
    """HOST:PORT of the node's API."""
    complete: bool = False
    """True: it holds the whole blob; False: it is fetching it now."""

    @field_validator("node_id")
    @classmethod
    def _node_id(cls, value: str) -> str:
        if not valid_node_id(value):
            raise ValueError(f"node id `{value}` is not a DNS label (a-z, 0-9, '-')")
        return value

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        return check_address(value)


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
    sha256: str = ""
    """SHA-256 (64 lowercase hex) the model's blob must have; empty: not known yet."""
    size_bytes: int = Field(0, ge=0, le=UINT64_MAX)
    """Of the model's blob; 0: unknown."""
    peers: tuple[BlobPeer, ...] = ()
    """Nodes that hold the blob or fetch it now, nearest first; not part of the content
    key, so a changed list alone makes no new generation."""
    token_env: str = Field("", pattern=r"^([A-Za-z_][A-Za-z0-9_]{0,127})?$")
    """Names a variable of the node's environment holding an access token for the source."""

    @field_validator("sha256")
    @classmethod
    def _sha256(cls, value: str) -> str:
        return check_sha256(value) if value else value

    def same_model(self, other: ModelWant) -> bool:
        """Whether `other` asks for the same model, whichever peers either names; a hash
        or size the fleet learned since (one side unset) changes nothing either: the node
        keeps the model it loaded."""
        learned = {"peers", "sha256", "size_bytes"}
        if self.model_dump(exclude=learned) != other.model_dump(exclude=learned):
            return False
        return _agree(self.sha256, other.sha256, "") and _agree(
            self.size_bytes, other.size_bytes, 0
        )


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
    max_disk_bytes: int = Field(0, ge=0, le=UINT64_MAX)
    """Disk the node's model blobs may use; unused ones are removed least recently used
    first. 0: unlimited."""
    max_download_rate_bps: int = Field(0, ge=0, le=UINT64_MAX)
    """Bytes per second the node downloads models at; 0: unlimited."""

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
        same key run the same things (a JSON text, so it can be stored and compared).
        Models' peers are left out: where a blob can be fetched from changes nothing a node
        runs."""
        return self.model_dump_json(
            exclude={"generation": True, "controller_id": True, **_PEERS_KEY}
        )

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


def _agree(one: object, other: object, unset: object) -> bool:
    """Equal, or one of them not known yet."""
    return one == other or unset in (one, other)


def _same(old: Frozen, new: Frozen) -> bool:
    if isinstance(old, ModelWant) and isinstance(new, ModelWant):
        return old.same_model(new)
    return old == new


def _changes(
    kind: Literal["model", "agent"],
    old: dict[str, Frozen],
    new: dict[str, Frozen],
) -> list[ItemChange]:
    found = [
        ItemChange(
            kind,
            name,
            "created" if name not in old else "unchanged" if _same(old[name], item) else "updated",
        )
        for name, item in new.items()
    ]
    return found + [ItemChange(kind, name, "removed") for name in old if name not in new]


def compare(old: NodeDesired, new: NodeDesired) -> list[ItemChange]:
    """Per-item differences from `old` to `new`: models first, then agents."""
    return _changes(
        "model", {m.alias: m for m in old.models}, {m.alias: m for m in new.models}
    ) + _changes("agent", {a.name: a for a in old.agents}, {a.name: a for a in new.agents})
