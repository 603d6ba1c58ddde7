"""The manifest document as written: one `deployment:` in one of two shapes.

These models are the source of `schemas/manifest.schema.json`. They check
structure and types only; rules that relate parts of the document to each
other (an agent's model must be declared, …) live in `checks.py`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from orchestrator.manifest import fields
from orchestrator.manifest.fields import (
    LABEL_PATTERN,
    NAME_PATTERN,
    Address,
    Count,
    Duration,
    EnvName,
    LabelKey,
    LoadBalancing,
    Name,
    PositiveInt,
    Sha256,
    Size,
    SizeOrPercent,
    Url,
)

RUNTIMES = ("llama.cpp", "ollama", "foundry-local", "vllm", "openai")
STRATEGIES = fields.STRATEGIES
DEFAULT_STRATEGY = "peak-ewma"
FAILOVER_MODES = ("automatic", "manual", "none")
DEPLOYMENT_TYPES = ("single-device", "distributed-edge")


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class ModelDecl(_Strict):
    """A model the deployment uses, under the alias agents and clients call it by."""

    alias: Name = Field(description="The name agents and gateway clients use for this model.")
    primary: bool = Field(False, description="The default model for agents that name none.")
    secondary: bool = Field(False, description="A helper model (routing, classification, …).")
    tasks: list[Name] = Field(
        default_factory=list, description="Tasks this model serves; the gateway routes task hints."
    )
    runtime: Literal[RUNTIMES] | None = Field(  # type: ignore[valid-type]
        None, description="Where the model runs. Omitted: the node's catalog decides."
    )
    source: str | None = Field(
        None,
        description="Where the model comes from. llama.cpp: a GGUF path, pkg:DISTRIBUTION, "
        "https://HOST/PATH/x.gguf, http://HOST/PATH/x.gguf (a LAN mirror) or "
        "hf://ORG/REPO/FILE.gguf[@REVISION]; other runtimes: their own names "
        "(Ollama tag, Foundry Local alias, served model name).",
    )
    sha256: Sha256 | None = Field(
        None,
        description="llama.cpp: SHA-256 the GGUF must have; a file that differs is refused. "
        "Omitted: learned on the first download, and later downloads must match it.",
    )
    quantization: str | None = Field(None, description="Quantization, e.g. Q4_K_M (informative).")
    memory: Size | None = Field(None, description="Memory the model needs once loaded.")
    parallel: Count | None = Field(
        None,
        description="llama.cpp: requests served at once (slots). Omitted: the node's catalog.",
    )
    context: Count | None = Field(
        None, description="llama.cpp: context tokens per slot. Omitted: the node's catalog."
    )


class AgentDecl(_Strict):
    """An agent: instructions plus a model plus the tools it may call."""

    name: Name = Field(description="The agent's name; gateway clients pass it as `model`.")
    model: Name | None = Field(None, description="Alias of the model; omitted: the primary model.")
    tools: list[Name] = Field(default_factory=list, description="Tools the agent may call.")
    instructions: str | None = Field(None, description="The agent's system instructions.")
    replicas: PositiveInt | None = Field(
        None, description="How many nodes run the agent (default: the nodes that list it, or 1)."
    )
    tasks: list[Name] = Field(default_factory=list, description="Tasks this agent handles.")
    tool_config: dict[Name, dict[str, Any]] = Field(
        default_factory=dict,
        description="Per-tool settings and limits, by tool name (e.g. database: {path: …}).",
        json_schema_extra={"propertyNames": {"pattern": NAME_PATTERN}},
    )


class Resources(_Strict):
    """Resource limits for a deployment or one node."""

    max_memory_usage: SizeOrPercent | None = Field(
        None, description="Memory all models together may use: a size, or a share like 75%."
    )
    max_concurrent_agents: PositiveInt | None = Field(
        None, description="Agent requests a node runs at once; more wait in the queue."
    )
    max_queue_per_agent: PositiveInt | None = Field(
        None, description="Requests that may wait per agent before new ones are refused (16)."
    )
    model_cache_size: Size | None = Field(
        None, description="Memory for loaded models kept warm; idle ones are evicted LRU."
    )
    auto_unload_idle_models: bool | None = Field(
        None, description="Unload a model nothing has used for `idle_timeout`."
    )
    idle_timeout: Duration | None = Field(None, description="Idle time before unloading (10m).")
    max_disk_usage: Size | None = Field(
        None,
        description="Disk the node's model blobs may use; unused ones are removed least "
        "recently used first. Omitted or 0: no limit.",
    )
    max_download_rate: Size | None = Field(
        None,
        description="Bytes per second a node downloads models at, e.g. 2MiB. "
        "Omitted or 0: no limit.",
    )


class Coordination(_Strict):
    """How requests are spread over nodes and what happens when a node fails."""

    load_balancing: LoadBalancing = Field(
        True, description="true (peak-ewma), false, or a strategy name."
    )
    failover: Literal[FAILOVER_MODES] = Field(  # type: ignore[valid-type]
        "automatic", description="automatic: move work off failed nodes; manual; none."
    )
    heartbeat_interval: Duration = Field("1s", description="How often nodes report (1s).")
    failure_timeout: Duration = Field(
        "3s", description="Silence after which a node is not-ready (3s)."
    )
    failback: bool = Field(True, description="Move work back to its preferred node on return.")
    session_affinity: bool = Field(
        False, description="Send a client's requests (by `user`) to the same replica."
    )


class Escalation(_Strict):
    """An OpenAI-compatible endpoint that takes requests the edge cannot serve."""

    base_url: Url = Field(description="Base URL of the OpenAI-compatible API, ending in /v1.")
    model: str = Field(description="The model name to request there.")
    api_key_env: EnvName | None = Field(
        None, description="Environment variable on the controller holding the API key."
    )
    timeout: Duration = Field("30s", description="Deadline for one escalated request.")


class NodeDecl(_Strict):
    """An edge node and the agents and models pinned to it."""

    id: Name = Field(description="The node's id, as its edge-node daemon was started with.")
    agents: list[Name] = Field(default_factory=list, description="Agents that run here.")
    models: list[Name] = Field(default_factory=list, description="Models loaded here.")
    labels: dict[LabelKey, str] = Field(
        default_factory=dict,
        description="Free-form labels.",
        json_schema_extra={"propertyNames": {"pattern": LABEL_PATTERN}},
    )
    address: Address | None = Field(
        None, description="HOST:PORT of the node, for networks without mDNS."
    )
    resources: Resources | None = Field(None, description="Limits for this node.")


class SingleDevice(_Strict):
    """Models and agents on this one box."""

    type: Literal["single-device"]
    name: Name | None = Field(None, description="Deployment name (default: the file's name).")
    hardware: str | None = Field(None, description="What the device is (informative).")
    models: list[ModelDecl] = Field(min_length=1, description="Models to load on the device.")
    agents: list[AgentDecl] = Field(default_factory=list, description="Agents to run.")
    resources: Resources | None = None
    escalation: Escalation | None = None


class DistributedEdge(_Strict):
    """Agents and models across several nodes, with load balancing and failover."""

    type: Literal["distributed-edge"]
    name: Name | None = Field(None, description="Deployment name (default: the file's name).")
    nodes: list[NodeDecl] = Field(min_length=1, description="The nodes and what runs on each.")
    models: list[ModelDecl] = Field(
        default_factory=list, description="Details of models named under nodes (optional)."
    )
    agents: list[AgentDecl] = Field(
        default_factory=list, description="Details of agents named under nodes (optional)."
    )
    coordination: Coordination = Coordination()
    resources: Resources | None = None
    escalation: Escalation | None = None


Deployment = Annotated[SingleDevice | DistributedEdge, Field(discriminator="type")]


class ManifestDocument(_Strict):
    """The whole file: a single `deployment:`."""

    deployment: Deployment


def model_for(path: tuple[str | int, ...]) -> type[BaseModel] | None:
    """The model class that owns the mapping at a document path, if any (for key hints)."""
    current: Any = ManifestDocument
    for part in path:
        if isinstance(part, int):
            continue
        if current is ManifestDocument and part == "deployment":
            current = "deployment"
            continue
        if current == "deployment":
            current = {"single-device": SingleDevice, "distributed-edge": DistributedEdge}.get(
                str(part)
            )
            if current is None:
                return None
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        info = current.model_fields.get(str(part))
        if info is None:
            return None
        current = _inner_model(info.annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _inner_model(annotation: Any) -> Any:
    """The BaseModel inside `X`, `X | None` or `list[X]`, or None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None
