"""The desired state and its protobuf form, both ways, and the state words on the wire."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from pydantic import ValidationError

from edgefleet.v1 import common_pb2, node_pb2
from edgefleet_contract.desired import ItemChange, NodeDesired, NodeLimits
from edgefleet_contract.errors import InvalidMessage

NEWER_LEADER = "a newer leader took over"
"""Words in every refusal (FAILED_PRECONDITION) of a push made at a stale leader term, by
which a controller tells it from a refused generation."""

MODEL_STATES: Mapping[str, common_pb2.ModelState] = {
    "pending": common_pb2.MODEL_STATE_PENDING,
    "loading": common_pb2.MODEL_STATE_LOADING,
    "ready": common_pb2.MODEL_STATE_READY,
    "unloading": common_pb2.MODEL_STATE_UNLOADING,
    "failed": common_pb2.MODEL_STATE_FAILED,
}
AGENT_STATES: Mapping[str, common_pb2.AgentState] = {
    "pending": common_pb2.AGENT_STATE_PENDING,
    "starting": common_pb2.AGENT_STATE_STARTING,
    "ready": common_pb2.AGENT_STATE_READY,
    "stopping": common_pb2.AGENT_STATE_STOPPING,
    "failed": common_pb2.AGENT_STATE_FAILED,
    "superseded": common_pb2.AGENT_STATE_SUPERSEDED,
}
ACTIONS: Mapping[str, node_pb2.ItemResult.Action] = {
    "unchanged": node_pb2.ItemResult.ACTION_UNCHANGED,
    "created": node_pb2.ItemResult.ACTION_CREATED,
    "updated": node_pb2.ItemResult.ACTION_UPDATED,
    "removed": node_pb2.ItemResult.ACTION_REMOVED,
}
KINDS: Mapping[str, node_pb2.ItemResult.Kind] = {
    "model": node_pb2.ItemResult.KIND_MODEL,
    "agent": node_pb2.ItemResult.KIND_AGENT,
}


def float32(value: float) -> float:
    """The number a caller wrote, from the nearest float32 a proto `float` carries.

    0.7 arrives as 0.699999988; without this a program would send, compare, save and
    log that.
    """
    return float(f"{value:.7g}")


def timestamp(seconds: float | None = None) -> Timestamp:
    """A protobuf Timestamp of a Unix time (now when None)."""
    stamp = Timestamp()
    stamp.FromNanoseconds(int((time.time() if seconds is None else seconds) * 1e9))
    return stamp


def _tool_config(text: str, agent: str) -> dict[str, dict[str, Any]]:
    if not text:
        return {}
    try:
        parsed = json.loads(text)
    except RecursionError:
        raise InvalidMessage(f"agent `{agent}`: tool_config_json is nested too deeply") from None
    except ValueError as exc:  # not JSON, or a number too long to convert
        raise InvalidMessage(f"agent `{agent}`: tool_config_json is not JSON: {exc}") from exc
    if not isinstance(parsed, dict) or not all(isinstance(v, dict) for v in parsed.values()):
        raise InvalidMessage(
            f"agent `{agent}`: tool_config_json must map tool names to objects of settings"
        )
    return parsed


_DEFAULT_LIMITS = NodeLimits()
"""What a limit the proto leaves at 0 means (proto3 cannot tell unset from 0)."""


def _where(location: tuple[int | str, ...]) -> str:
    """`agents[0].name` for pydantic's ("agents", 0, "name")."""
    text = ""
    for part in location:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text


def validation_problems(error: ValidationError) -> str:
    """Every problem pydantic found, with its full path (`agents[1].name: ...`)."""
    problems = []
    for problem in error.errors():
        # A check of the whole state has no location; its message says what it is about.
        message = str(problem["msg"]).removeprefix("Value error, ")
        where = _where(tuple(problem["loc"]))
        problems.append(f"{where}: {message}" if where else message)
    return "; ".join(problems)


def desired_from_proto(request: node_pb2.ApplyStateRequest) -> NodeDesired:
    """The desired state an ApplyState request carries; InvalidMessage says what is wrong."""
    if request.generation <= 0:
        raise InvalidMessage("generation must be greater than 0")
    state, limits = request.state, request.state.limits
    # Validated in one go, so every problem carries its full path (`agents[1].name`).
    document: dict[str, Any] = {
        "generation": request.generation,
        "controller_id": request.controller_id,
        "models": [
            {
                "alias": m.alias,
                "runtime": m.runtime,
                "source": m.source,
                "quantization": m.quantization,
                "memory_bytes": m.memory_bytes,
                "tasks": tuple(m.tasks),
                "parallel": m.parallel,
                "context": m.context,
                "sha256": m.sha256,
                "size_bytes": m.size_bytes,
                "peers": [
                    {"node_id": p.node_id, "address": p.address, "complete": p.complete}
                    for p in m.peers
                ],
                "token_env": m.token_env,
            }
            for m in state.models
        ],
        "agents": [
            {
                "name": a.name,
                "model": a.model,
                "tools": tuple(a.tools),
                "instructions": a.instructions,
                "tasks": tuple(a.tasks),
                "tool_config": _tool_config(a.tool_config_json, a.name),
            }
            for a in state.agents
        ],
        "limits": {
            "max_memory_bytes": limits.max_memory_bytes,
            "max_memory_fraction": float32(limits.max_memory_fraction),
            "model_cache_bytes": limits.model_cache_bytes,
            "max_concurrent_agents": limits.max_concurrent_agents,
            "max_queue_per_agent": limits.max_queue_per_agent
            or _DEFAULT_LIMITS.max_queue_per_agent,
            "auto_unload_idle_models": limits.auto_unload_idle_models,
            "idle_timeout_s": limits.idle_timeout_s or _DEFAULT_LIMITS.idle_timeout_s,
            "max_disk_bytes": limits.max_disk_bytes,
            "max_download_rate_bps": limits.max_download_rate_bps,
        },
    }
    try:
        return NodeDesired.model_validate(document)
    except ValidationError as exc:
        raise InvalidMessage(f"invalid desired state: {validation_problems(exc)}") from exc


def desired_to_proto(desired: NodeDesired) -> node_pb2.ApplyStateRequest:
    """The ApplyState request that carries a desired state (the controller's side)."""
    limits = desired.limits
    return node_pb2.ApplyStateRequest(
        generation=desired.generation,
        controller_id=desired.controller_id,
        state=node_pb2.NodeDesiredState(
            models=[
                common_pb2.ModelSpec(
                    alias=m.alias,
                    runtime=m.runtime,
                    source=m.source,
                    quantization=m.quantization,
                    memory_bytes=m.memory_bytes,
                    tasks=list(m.tasks),
                    parallel=m.parallel,
                    context=m.context,
                    sha256=m.sha256,
                    size_bytes=m.size_bytes,
                    peers=[
                        common_pb2.BlobPeer(
                            node_id=p.node_id, address=p.address, complete=p.complete
                        )
                        for p in m.peers
                    ],
                    token_env=m.token_env,
                )
                for m in desired.models
            ],
            agents=[
                common_pb2.AgentSpec(
                    name=a.name,
                    model=a.model,
                    tools=list(a.tools),
                    instructions=a.instructions,
                    tasks=list(a.tasks),
                    tool_config_json=json.dumps(a.tool_config, sort_keys=True)
                    if a.tool_config
                    else "",
                )
                for a in desired.agents
            ],
            limits=common_pb2.ResourceLimits(
                max_memory_bytes=limits.max_memory_bytes,
                max_memory_fraction=limits.max_memory_fraction,
                max_concurrent_agents=limits.max_concurrent_agents,
                max_queue_per_agent=limits.max_queue_per_agent,
                model_cache_bytes=limits.model_cache_bytes,
                auto_unload_idle_models=limits.auto_unload_idle_models,
                idle_timeout_s=limits.idle_timeout_s,
                max_disk_bytes=limits.max_disk_bytes,
                max_download_rate_bps=limits.max_download_rate_bps,
            ),
        ),
    )


def item_results(changes: list[ItemChange]) -> list[node_pb2.ItemResult]:
    """ApplyState's per-item results."""
    return [
        node_pb2.ItemResult(kind=KINDS[c.kind], name=c.name, action=ACTIONS[c.action])
        for c in changes
    ]
