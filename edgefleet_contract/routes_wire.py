"""The routing table and its protobuf form, both ways."""

from __future__ import annotations

from typing import Any, cast, get_args

from pydantic import ValidationError

from edgefleet.v1 import node_pb2
from edgefleet_contract.errors import InvalidMessage
from edgefleet_contract.routing import Strategy
from edgefleet_contract.routing_table import RoutingTable
from edgefleet_contract.wire import validation_problems

STRATEGIES = frozenset(get_args(Strategy))


def table_to_proto(table: RoutingTable) -> node_pb2.RoutingTable:
    """The RoutingTable message that carries a table (the controller's side)."""
    message = node_pb2.RoutingTable(
        generation=table.generation,
        controller_id=table.controller_id,
        api_key_digests=list(table.api_key_digests),
    )
    for d in table.index.deployments:
        deployment = message.deployments.add(
            name=d.name,
            distributed=d.distributed,
            strategy=d.strategy or "",
            session_affinity=d.session_affinity,
            agents=[
                node_pb2.AgentRoute(name=a.name, instructions=a.instructions) for a in d.agents
            ],
            models=[
                node_pb2.ModelRoute(alias=m.alias, tasks=list(m.tasks), primary=m.primary)
                for m in d.models
            ],
        )
        if d.escalation is not None:
            e = d.escalation
            deployment.escalation.CopyFrom(
                node_pb2.EscalationRoute(
                    base_url=e.base_url,
                    model=e.model,
                    api_key_env=e.api_key_env or "",
                    timeout_s=e.timeout_s,
                )
            )
    for t in table.targets:
        message.targets.add(
            name=t.name,
            agent=t.kind == "agent",
            replicas=[
                node_pb2.RouteReplica(node_id=r.node_id, address=r.address, generation=r.generation)
                for r in t.replicas
            ],
        )
    return message


def table_from_proto(message: node_pb2.RoutingTable) -> RoutingTable:
    """The table a RoutingTable message carries; InvalidMessage says what is wrong."""
    if message.generation <= 0:
        raise InvalidMessage("a routing table's generation must be greater than 0")
    document: dict[str, Any] = {
        "generation": message.generation,
        "controller_id": message.controller_id,
        "api_key_digests": tuple(message.api_key_digests),
        "index": {"deployments": [_deployment(d) for d in message.deployments]},
        "targets": [
            {
                "name": t.name,
                "kind": "agent" if t.agent else "model",
                "replicas": [
                    {"node_id": r.node_id, "address": r.address, "generation": r.generation}
                    for r in t.replicas
                ],
            }
            for t in message.targets
        ],
    }
    try:
        return RoutingTable.model_validate(document)
    except ValidationError as exc:
        raise InvalidMessage(f"invalid routing table: {validation_problems(exc)}") from exc


def _deployment(d: node_pb2.DeploymentRoutes) -> dict[str, Any]:
    if d.strategy and d.strategy not in STRATEGIES:
        raise InvalidMessage(
            f"deployment `{d.name}`: strategy `{d.strategy}` is not one of "
            f"{', '.join(sorted(STRATEGIES))}"
        )
    found: dict[str, Any] = {
        "name": d.name,
        "distributed": d.distributed,
        "strategy": cast(Strategy, d.strategy) if d.strategy else None,
        "session_affinity": d.session_affinity,
        "agents": [{"name": a.name, "instructions": a.instructions} for a in d.agents],
        "models": [
            {"alias": m.alias, "tasks": tuple(m.tasks), "primary": m.primary} for m in d.models
        ],
    }
    if d.HasField("escalation"):
        e = d.escalation
        found["escalation"] = {
            "base_url": e.base_url,
            "model": e.model,
            "api_key_env": e.api_key_env or None,
            "timeout_s": e.timeout_s or 30.0,
        }
    return found
