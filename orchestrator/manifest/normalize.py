"""From a checked document to the desired state (both forms to one shape)."""

from __future__ import annotations

from edgefleet_contract.units import parse_duration, parse_percent, parse_size
from orchestrator.manifest.desired import (
    AgentSpec,
    CoordinationSpec,
    DesiredState,
    EscalationSpec,
    ModelRole,
    ModelSpec,
    NodeSpec,
    ResourceLimits,
)
from orchestrator.manifest.document import (
    DEFAULT_STRATEGY,
    AgentDecl,
    DistributedEdge,
    ModelDecl,
    NodeDecl,
    Resources,
    SingleDevice,
)


def default_model(models: list[ModelDecl], among: list[str] | None = None) -> str | None:
    """The model an agent without one runs on: the only one, else the primary; else None.

    `among` restricts the choice to the aliases a node lists (distributed form).
    """
    candidates: list[str] = [m.alias for m in models] if among is None else list(among)
    if len(candidates) == 1:
        return candidates[0]
    primaries: list[str] = [m.alias for m in models if m.primary and m.alias in candidates]
    return primaries[0] if len(primaries) == 1 else None


def agent_model_on_node(
    deployment: DistributedEdge, node: NodeDecl, agent: AgentDecl | None
) -> str | None:
    """Which model an agent listed under `node` uses there (None if it cannot be told)."""
    if agent is not None and agent.model is not None:
        return agent.model
    return default_model(deployment.models, among=node.models)


def normalize(deployment: SingleDevice | DistributedEdge, default_name: str) -> DesiredState:
    """The desired state of a document that passed every check."""
    name = deployment.name or default_name
    resources = _limits(deployment.resources)
    escalation = (
        EscalationSpec(
            base_url=deployment.escalation.base_url,
            model=deployment.escalation.model,
            api_key_env=deployment.escalation.api_key_env,
            timeout_s=parse_duration(deployment.escalation.timeout),
        )
        if deployment.escalation
        else None
    )
    if isinstance(deployment, SingleDevice):
        models = tuple(_model(m) for m in deployment.models)
        agents = tuple(
            _agent(a, a.model or default_model(deployment.models) or "", (), a.replicas or 1)
            for a in deployment.agents
        )
        return DesiredState(
            type="single-device",
            name=name,
            models=models,
            agents=agents,
            resources=resources,
            escalation=escalation,
        )
    return _distributed(deployment, name, resources, escalation)


def _distributed(
    deployment: DistributedEdge,
    name: str,
    resources: ResourceLimits,
    escalation: EscalationSpec | None,
) -> DesiredState:
    declared_models = {m.alias: m for m in deployment.models}
    aliases = list(declared_models)
    for node in deployment.nodes:
        aliases += [alias for alias in node.models if alias not in aliases]
    models = tuple(
        _model(declared_models[a]) if a in declared_models else ModelSpec(alias=a) for a in aliases
    )
    declared_agents = {a.name: a for a in deployment.agents}
    order = list(declared_agents)
    for node in deployment.nodes:
        order += [agent for agent in node.agents if agent not in order]
    agents = []
    for agent_name in order:
        decl = declared_agents.get(agent_name)
        pinned = tuple(n.id for n in deployment.nodes if agent_name in n.agents)
        model = next(
            (
                m
                for n in deployment.nodes
                if agent_name in n.agents
                for m in [agent_model_on_node(deployment, n, decl)]
                if m
            ),
            decl.model if decl and decl.model else default_model(deployment.models) or "",
        )
        replicas = (decl.replicas if decl else None) or max(1, len(pinned))
        agents.append(_agent(decl or AgentDecl(name=agent_name), model, pinned, replicas))
    coordination = deployment.coordination
    strategy = coordination.load_balancing
    return DesiredState(
        type="distributed-edge",
        name=name,
        models=models,
        agents=tuple(agents),
        nodes=tuple(
            NodeSpec(
                id=n.id,
                models=tuple(n.models),
                agents=tuple(n.agents),
                labels=dict(n.labels),
                address=n.address,
                resources=_limits(n.resources) if n.resources else None,
            )
            for n in deployment.nodes
        ),
        coordination=CoordinationSpec(
            strategy=DEFAULT_STRATEGY if strategy is True else (strategy or None),
            failover=coordination.failover,
            heartbeat_interval_s=parse_duration(coordination.heartbeat_interval),
            failure_timeout_s=parse_duration(coordination.failure_timeout),
            failback=coordination.failback,
            session_affinity=coordination.session_affinity,
        ),
        resources=resources,
        escalation=escalation,
    )


def _model(decl: ModelDecl) -> ModelSpec:
    role: ModelRole | None = "primary" if decl.primary else "secondary" if decl.secondary else None
    return ModelSpec(
        alias=decl.alias,
        role=role,
        tasks=tuple(decl.tasks),
        runtime=decl.runtime,
        source=decl.source,
        quantization=decl.quantization,
        memory_bytes=parse_size(decl.memory) if decl.memory is not None else None,
        parallel=decl.parallel,
        context=decl.context,
        sha256=decl.sha256,
    )


def _agent(decl: AgentDecl, model: str, pinned: tuple[str, ...], replicas: int) -> AgentSpec:
    return AgentSpec(
        name=decl.name,
        model=model,
        tools=tuple(decl.tools),
        instructions=decl.instructions or "",
        replicas=replicas,
        tasks=tuple(decl.tasks),
        preferred_nodes=pinned,
        tool_config={k: dict(v) for k, v in decl.tool_config.items()},
    )


def _optional_size(value: str | int | None) -> int | None:
    return parse_size(value) if value is not None else None


def _limits(resources: Resources | None) -> ResourceLimits:
    if resources is None:
        return ResourceLimits()
    memory = resources.max_memory_usage
    is_share = isinstance(memory, str) and memory.endswith("%")
    defaults = ResourceLimits()
    return ResourceLimits(
        max_memory_bytes=parse_size(memory) if memory is not None and not is_share else None,
        max_memory_fraction=parse_percent(str(memory)) if is_share else None,
        max_concurrent_agents=resources.max_concurrent_agents,
        max_queue_per_agent=resources.max_queue_per_agent or defaults.max_queue_per_agent,
        model_cache_bytes=_optional_size(resources.model_cache_size),
        auto_unload_idle_models=bool(resources.auto_unload_idle_models),
        idle_timeout_s=(
            parse_duration(resources.idle_timeout)
            if resources.idle_timeout is not None
            else defaults.idle_timeout_s
        ),
        max_disk_bytes=_optional_size(resources.max_disk_usage),
        max_download_rate_bps=_optional_size(resources.max_download_rate),
    )
