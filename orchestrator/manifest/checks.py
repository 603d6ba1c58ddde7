"""Rules that relate parts of a manifest to each other, beyond what the schema can say."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from importlib.metadata import entry_points

from edgefleet_contract.desired import UINT64_MAX
from edgefleet_contract.model_source import SOURCE_FORMS, looks_like_url, parse_model_source
from edgefleet_contract.units import parse_duration, parse_percent, parse_size
from orchestrator.manifest.diagnostics import Diagnostic, DocPath
from orchestrator.manifest.document import (
    AgentDecl,
    DistributedEdge,
    ModelDecl,
    NodeDecl,
    Resources,
    SingleDevice,
)
from orchestrator.manifest.hints import did_you_mean
from orchestrator.manifest.normalize import agent_model_on_node, default_model
from orchestrator.manifest.yaml_source import LocatedDocument

BUILTIN_TOOLS = frozenset({"database", "calendar", "email", "time"})
TOOL_ENTRY_POINT_GROUP = "edgefleet.tools"
D = ("deployment",)


def known_tool_names() -> frozenset[str]:
    """Tool names agents may list: the built-ins plus every `edgefleet.tools` entry point."""
    return BUILTIN_TOOLS | {ep.name for ep in entry_points(group=TOOL_ENTRY_POINT_GROUP)}


class _Findings:
    def __init__(self, source: LocatedDocument) -> None:
        self.source = source
        self.items: list[Diagnostic] = []

    def error(
        self, path: DocPath, message: str, hint: str | None = None, *, key: bool = False
    ) -> None:
        self.items.append(self.source.diagnostic(path, message, hint=hint, key=key))

    def warning(self, path: DocPath, message: str, hint: str | None = None) -> None:
        self.items.append(self.source.diagnostic(path, message, hint=hint, severity="warning"))


def check(
    deployment: SingleDevice | DistributedEdge,
    source: LocatedDocument,
    tools: Iterable[str] | None = None,
) -> list[Diagnostic]:
    """Every semantic problem in a structurally valid deployment."""
    found = _Findings(source)
    known_tools = frozenset(tools) if tools is not None else known_tool_names()
    _unique(found, [m.alias for m in deployment.models], ("models",), "alias", "model alias")
    _unique(found, [a.name for a in deployment.agents], ("agents",), "name", "agent name")
    _model_roles(found, deployment.models)
    _llamacpp_settings(found, deployment.models)
    _model_sources(found, deployment.models)
    for i, agent in enumerate(deployment.agents):
        _agent_tools(found, agent, (*D, "agents", i), known_tools)
    _resources(found, deployment.resources, (*D, "resources"))
    if isinstance(deployment, SingleDevice):
        _single_device(found, deployment)
    else:
        _distributed(found, deployment)
    return found.items


def _unique(found: _Findings, names: Sequence[str], where: DocPath, key: str, what: str) -> None:
    first: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in first:
            line = found.source.locate((*D, *where, first[name], key)).line
            found.error(
                (*D, *where, i, key),
                f"duplicate {what} `{name}` (first declared at line {line})",
                hint=f"each {what} must be unique; remove or rename one",
            )
        else:
            first[name] = i


def _model_roles(found: _Findings, models: Sequence[ModelDecl]) -> None:
    primaries = [i for i, m in enumerate(models) if m.primary]
    for i in primaries[1:]:
        found.error(
            (*D, "models", i, "primary"),
            f"more than one primary model (`{models[primaries[0]].alias}` is primary already)",
            hint="mark exactly one model `primary: true`",
        )
    for i, model in enumerate(models):
        if model.primary and model.secondary:
            found.error(
                (*D, "models", i, "secondary"),
                f"model `{model.alias}` is both primary and secondary",
                hint="keep one of the two",
            )


LLAMACPP_ONLY = ("parallel", "context", "sha256")
"""Model settings only llama.cpp takes; other runtimes size themselves and fetch their own
models."""


def _llamacpp_settings(found: _Findings, models: Sequence[ModelDecl]) -> None:
    # An error, not a warning: another runtime would silently ignore the setting, and the
    # operator would believe requests run with slots they do not get.
    for i, model in enumerate(models):
        if model.runtime is None or model.runtime == "llama.cpp":
            continue
        for key in LLAMACPP_ONLY:
            if getattr(model, key) is not None:
                found.error(
                    (*D, "models", i, key),
                    f"`{key}` applies to llama.cpp only, but model `{model.alias}` "
                    f"runs on {model.runtime}",
                    hint=f"remove `{key}`, or use runtime: llama.cpp",
                    key=True,
                )


def _model_sources(found: _Findings, models: Sequence[ModelDecl]) -> None:
    # Other runtimes name models their own way (an Ollama tag has a colon, a served model
    # name anything): a source is read as llama.cpp's only when it must be one, or when it
    # is written as a URL, which only llama.cpp downloads.
    for i, model in enumerate(models):
        source = model.source
        if source is None or not (
            model.runtime == "llama.cpp" or (model.runtime is None and looks_like_url(source))
        ):
            continue
        try:
            parse_model_source(source)
        except ValueError as exc:
            found.error(
                (*D, "models", i, "source"),
                str(exc).removesuffix(f"; write {SOURCE_FORMS}"),
                hint=f"write {SOURCE_FORMS}",
            )


def _agent_tools(
    found: _Findings, agent: AgentDecl, path: DocPath, known_tools: frozenset[str]
) -> None:
    for j, tool in enumerate(agent.tools):
        if tool not in known_tools:
            found.error(
                (*path, "tools", j),
                f"unknown tool `{tool}`",
                hint=did_you_mean(tool, known_tools, allowed_label="known tools"),
            )
    for tool in agent.tool_config:
        if tool not in agent.tools:
            found.error(
                (*path, "tool_config", tool),
                f"settings for tool `{tool}`, which agent `{agent.name}` does not list",
                hint=f"add `{tool}` to the agent's tools, or remove its settings",
                key=True,
            )


def _resources(found: _Findings, resources: Resources | None, path: DocPath) -> None:
    if resources is None:
        return
    memory = resources.max_memory_usage
    if isinstance(memory, str) and memory.endswith("%"):
        try:
            parse_percent(memory)
        except ValueError as exc:
            found.error((*path, "max_memory_usage"), str(exc))
    for key in ("max_disk_usage", "max_download_rate"):
        size = getattr(resources, key)
        if size is not None and parse_size(size) > UINT64_MAX:
            found.error(
                (*path, key),
                f"`{size}` is more than a node can be given ({UINT64_MAX} bytes)",
                hint="write a smaller size, or leave it out for no limit",
            )


def _undeclared_model(
    found: _Findings, path: DocPath, agent: str, model: str, known: list[str]
) -> None:
    found.error(
        path,
        f"agent `{agent}` uses model `{model}`, which no model declares",
        hint=did_you_mean(model, known, allowed_label="declared models")
        or "declare it under deployment.models",
    )


def _single_device(found: _Findings, deployment: SingleDevice) -> None:
    aliases = [m.alias for m in deployment.models]
    for i, agent in enumerate(deployment.agents):
        path = (*D, "agents", i)
        if agent.model is None:
            if default_model(deployment.models) is None:
                found.error(
                    path,
                    f"agent `{agent.name}` names no model and there is no primary model",
                    hint="give the agent a `model`, or mark one model `primary: true`",
                )
        elif agent.model not in aliases:
            _undeclared_model(found, (*path, "model"), agent.name, agent.model, aliases)
        if agent.replicas is not None and agent.replicas > 1:
            found.error(
                (*path, "replicas"),
                f"agent `{agent.name}` asks for {agent.replicas} replicas, "
                "but a single-device deployment has one node",
                hint="use replicas: 1, or a distributed-edge deployment",
            )


def _distributed(found: _Findings, deployment: DistributedEdge) -> None:
    nodes = deployment.nodes
    _unique(found, [n.id for n in nodes], ("nodes",), "id", "node id")
    declared_agents = {a.name: a for a in deployment.agents}
    all_models = [m.alias for m in deployment.models]
    all_models += [a for n in nodes for a in n.models if a not in all_models]
    for i, node in enumerate(nodes):
        _node_lists(found, node, i)
    resolved: dict[str, dict[str, str]] = {}  # agent -> node id -> model
    for i, node in enumerate(nodes):
        for j, agent_name in enumerate(node.agents):
            path = (*D, "nodes", i, "agents", j)
            decl = declared_agents.get(agent_name)
            model = agent_model_on_node(deployment, node, decl)
            if model is None:
                found.error(
                    path,
                    f"cannot tell which model agent `{agent_name}` uses on node `{node.id}`: "
                    + (
                        f"the node lists {', '.join(node.models)} and none is primary"
                        if node.models
                        else "the node lists no models"
                    ),
                    hint=f"declare `{agent_name}` under deployment.agents with a `model`"
                    if node.models
                    else f"add a model to nodes[{i}].models",
                )
                continue
            if model not in node.models:
                found.error(
                    path,
                    f"agent `{agent_name}` needs model `{model}`, which node `{node.id}` "
                    "does not load",
                    hint=f"add `{model}` to nodes[{i}].models",
                )
            resolved.setdefault(agent_name, {})[node.id] = model
    for agent_name, per_node in resolved.items():
        if agent_name not in declared_agents and len(set(per_node.values())) > 1:
            listing = ", ".join(f"{n}: {m}" for n, m in sorted(per_node.items()))
            i = next(k for k, n in enumerate(nodes) if agent_name in n.agents)
            found.error(
                (*D, "nodes", i, "agents", nodes[i].agents.index(agent_name)),
                f"agent `{agent_name}` would run on different models ({listing})",
                hint=f"declare `{agent_name}` under deployment.agents with one `model`",
            )
    for i, agent in enumerate(deployment.agents):
        _placed_agent(found, deployment, agent, i, all_models)
    used = {m for n in nodes for m in n.models}
    for i, declared in enumerate(deployment.models):
        if declared.alias not in used:
            found.warning(
                (*D, "models", i, "alias"),
                f"model `{declared.alias}` is declared but no node loads it",
                hint="list it under a node's models, or remove it",
            )
    coordination = deployment.coordination
    if parse_duration(coordination.failure_timeout) <= parse_duration(
        coordination.heartbeat_interval
    ):
        found.error(
            (*D, "coordination", "failure_timeout"),
            "failure_timeout must be longer than heartbeat_interval",
            hint="a node is declared failed after missing heartbeats; allow at least two",
        )
    for i, node in enumerate(nodes):
        _resources(found, node.resources, (*D, "nodes", i, "resources"))


def _node_lists(found: _Findings, node: NodeDecl, i: int) -> None:
    for key, names in (("agents", node.agents), ("models", node.models)):
        seen: set[str] = set()
        for j, name in enumerate(names):
            if name in seen:
                found.error(
                    (*D, "nodes", i, key, j),
                    f"`{name}` is listed twice under node `{node.id}`",
                    hint="list it once",
                )
            seen.add(name)


def _placed_agent(
    found: _Findings, deployment: DistributedEdge, agent: AgentDecl, i: int, models: list[str]
) -> None:
    path = (*D, "agents", i)
    if agent.model is not None and agent.model not in models:
        _undeclared_model(found, (*path, "model"), agent.name, agent.model, models)
        return
    pinned = [n.id for n in deployment.nodes if agent.name in n.agents]
    if pinned:
        hosts = pinned
    else:
        model = agent.model or default_model(deployment.models)
        if model is None:
            found.error(
                path,
                f"agent `{agent.name}` names no model and no node lists it",
                hint="give the agent a `model`, or list it under a node",
            )
            return
        hosts = [n.id for n in deployment.nodes if model in n.models]
        if not hosts:
            found.error(
                path,
                f"agent `{agent.name}` can run nowhere: no node lists it or loads `{model}`",
                hint=f"list `{agent.name}` under a node, or add `{model}` to a node's models",
            )
            return
    if agent.replicas is not None and agent.replicas > len(hosts):
        found.error(
            (*path, "replicas"),
            f"agent `{agent.name}` asks for {agent.replicas} replicas but only "
            f"{len(hosts)} node(s) can host it ({', '.join(hosts)})",
            hint="lower replicas, or list the agent under more nodes",
        )
