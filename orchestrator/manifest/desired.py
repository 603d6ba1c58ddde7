"""The desired state a manifest asks for, in one shape for both manifest forms.

Units are resolved (bytes, seconds), defaults applied, and the distributed
form's agents that are only named under a node carry that node's model. The
scheduler reads only this, never the document as written.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from edgefleet_contract.routing import Strategy

DeploymentType = Literal["single-device", "distributed-edge"]
FailoverMode = Literal["automatic", "manual", "none"]
ModelRole = Literal["primary", "secondary"]

LOCAL_NODE = "local"
"""The node id a single-device deployment places everything on (the box it runs on)."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ModelSpec(_Frozen):
    """A model to load, by alias, with where it comes from when the manifest says."""

    alias: str
    role: ModelRole | None = None
    tasks: tuple[str, ...] = ()
    runtime: str | None = None
    source: str | None = None
    quantization: str | None = None
    memory_bytes: int | None = None
    parallel: int | None = None
    """llama.cpp slots; None: the node's catalog decides."""
    context: int | None = None
    """llama.cpp context tokens per slot; None: the node's catalog decides."""
    sha256: str | None = None
    """llama.cpp: the SHA-256 the GGUF must have; None: learned on the first download."""


class AgentSpec(_Frozen):
    """An agent to run: its model, tools and how many replicas on which nodes."""

    name: str
    model: str
    tools: tuple[str, ...] = ()
    instructions: str = ""
    replicas: int = 1
    tasks: tuple[str, ...] = ()
    preferred_nodes: tuple[str, ...] = ()
    """Nodes the manifest pins the agent to; empty means any node with its model."""
    tool_config: dict[str, dict[str, Any]] = Field(default_factory=dict)


class ResourceLimits(_Frozen):
    """Resource limits with defaults applied."""

    max_memory_bytes: int | None = None
    max_memory_fraction: float | None = None
    max_concurrent_agents: int | None = None
    max_queue_per_agent: int = 16
    model_cache_bytes: int | None = None
    auto_unload_idle_models: bool = False
    idle_timeout_s: float = 600.0
    max_disk_bytes: int | None = None
    """Disk for the node's model blobs; None: unlimited."""
    max_download_rate_bps: int | None = None
    """Bytes per second the node downloads models at; None: unlimited."""


class NodeSpec(_Frozen):
    """A node the manifest names, with what is pinned to it."""

    id: str
    models: tuple[str, ...] = ()
    agents: tuple[str, ...] = ()
    labels: dict[str, str] = Field(default_factory=dict)
    address: str | None = None
    resources: ResourceLimits | None = None


class CoordinationSpec(_Frozen):
    """Load balancing and failover settings, in seconds."""

    strategy: Strategy | None = "peak-ewma"
    """None: load balancing off (the first ready replica serves)."""
    failover: FailoverMode = "automatic"
    heartbeat_interval_s: float = 1.0
    failure_timeout_s: float = 3.0
    failback: bool = True
    session_affinity: bool = False


class EscalationSpec(_Frozen):
    """The cloud endpoint that takes what the edge cannot serve."""

    base_url: str
    model: str
    api_key_env: str | None = None
    timeout_s: float = 30.0


class DesiredState(_Frozen):
    """Everything one manifest revision asks for."""

    type: DeploymentType
    name: str
    models: tuple[ModelSpec, ...] = ()
    agents: tuple[AgentSpec, ...] = ()
    nodes: tuple[NodeSpec, ...] = ()
    """Empty for single-device: everything goes on the local node."""
    coordination: CoordinationSpec = Field(default_factory=CoordinationSpec)
    resources: ResourceLimits = Field(default_factory=ResourceLimits)
    escalation: EscalationSpec | None = None

    def model(self, alias: str) -> ModelSpec:
        """The model with this alias (KeyError if none)."""
        for model in self.models:
            if model.alias == alias:
                return model
        raise KeyError(alias)

    def agent(self, name: str) -> AgentSpec:
        """The agent with this name (KeyError if none)."""
        for agent in self.agents:
            if agent.name == name:
                return agent
        raise KeyError(name)
