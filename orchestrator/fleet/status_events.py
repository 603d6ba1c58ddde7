"""Events for what a node reports changing: a model or agent becoming ready, failing, going,
and a draining node becoming empty."""

from __future__ import annotations

from dataclasses import dataclass

from edgefleet.v1 import common_pb2, node_pb2
from edgefleet_contract.desired import NodeDesired
from orchestrator.events import Severity


@dataclass(frozen=True, slots=True)
class StatusEvent:
    """One event worth recording."""

    severity: Severity
    reason: str
    obj: str
    message: str


def _model_word(state: int) -> str:
    return common_pb2.ModelState.Name(state).removeprefix("MODEL_STATE_").lower()


def status_events(
    node: str, before: node_pb2.NodeStatus | None, after: node_pb2.NodeStatus
) -> list[StatusEvent]:
    """What changed from `before` to `after` that people want to see."""
    found: list[StatusEvent] = []
    old_models = {m.alias: m for m in before.models} if before else {}
    for model in after.models:
        was = old_models.get(model.alias)
        if was is not None and was.state == model.state:
            continue
        word = _model_word(model.state)
        obj = f"model/{model.alias}"
        if model.state == common_pb2.MODEL_STATE_READY:
            found.append(StatusEvent("info", "ModelReady", obj, f"{model.alias} ready on {node}"))
        elif model.state == common_pb2.MODEL_STATE_FAILED:
            found.append(
                StatusEvent(
                    "error",
                    "ModelFailed",
                    obj,
                    f"{model.alias} failed on {node}: {model.reason}",
                )
            )
        elif was is not None and was.state == common_pb2.MODEL_STATE_READY:
            found.append(
                StatusEvent(
                    "warning",
                    "ModelNotReady",
                    obj,
                    f"{model.alias} is {word} on {node}"
                    + (f": {model.reason}" if model.reason else ""),
                )
            )
    old_agents = {a.name: a for a in before.agents} if before else {}
    for agent in after.agents:
        previous = old_agents.get(agent.name)
        if previous is not None and previous.state == agent.state:
            continue
        obj = f"agent/{agent.name}"
        if agent.state == common_pb2.AGENT_STATE_READY:
            found.append(
                StatusEvent("info", "AgentReady", obj, f"agent {agent.name} ready on {node}")
            )
        elif agent.state == common_pb2.AGENT_STATE_FAILED:
            found.append(
                StatusEvent(
                    "error",
                    "AgentFailed",
                    obj,
                    f"agent {agent.name} failed on {node}: {agent.reason}",
                )
            )
    gone = set(old_agents) - {a.name for a in after.agents}
    found += [
        StatusEvent("info", "AgentStopped", f"agent/{name}", f"agent {name} stopped on {node}")
        for name in sorted(gone)
    ]
    return found


def is_empty(status: node_pb2.NodeStatus, desired: NodeDesired | None) -> bool:
    """Whether the node runs nothing, as it reports, and is meant to run nothing: its
    assignment (when it has one) is empty and it has enacted it."""
    if status.models or status.agents:
        return False
    if desired is None:
        return True
    return not desired.models and not desired.agents and status.generation == desired.generation
