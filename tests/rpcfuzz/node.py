"""The node API's fuzz cases, what each method may answer, and the state they leave.

No request may make the node load a model: aliases are ones no catalog serves,
`runtime` is never a real runtime, and a `source` (which alone means a GGUF
path for llama.cpp) is never a file that exists.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import grpc
from google.protobuf.message import Message

from edgefleet.v1 import common_pb2, node_pb2
from node_agent.blobs import BlobStore
from node_agent.runtimes.base import RUNTIME_NAMES
from tests.rpcfuzz.runner import DEFAULT_ALLOWED, Outcome, Policy
from tests.rpcfuzz.values import U64, Hostile

MODELS = ("fuzz-a", "fuzz-b", "fuzz-c")
"""Model aliases no catalog serves (they fail at once, and never load)."""
AGENTS = ("helper", "planner")
TOOLS = ("time", "database", "calendar", "email")
ROLES = ("system", "developer", "user", "assistant", "tool")
NODES = ("peer-a", "peer-b")
"""Peers a routing table names (nothing listens at their addresses)."""
STRATEGIES = ("round-robin", "least-outstanding", "peak-ewma", "")
NAMES = (*MODELS, *AGENTS, *TOOLS, *ROLES, *NODES, *STRATEGIES)
LATE = 0.9
"""Past this share of its cases, ApplyState and ApplyRoutes also try the largest generations
(which leave no room for a newer one)."""
SERIAL = ("ApplyState", "ApplyRoutes")

_C = grpc.StatusCode
_ANY = frozenset({_C.INVALID_ARGUMENT.name, _C.RESOURCE_EXHAUSTED.name})
_ALLOWED = {
    "GetInfo": {_C.OK},
    "ApplyState": {_C.OK, _C.FAILED_PRECONDITION},
    "ApplyRoutes": {_C.OK, _C.FAILED_PRECONDITION},
    "WatchStatus": {_C.OK},
    # No model can load, so no agent or model call succeeds: UNAVAILABLE is the node's
    # documented answer for a model that failed or is not ready (RuntimeUnavailable).
    "InvokeAgent": {_C.NOT_FOUND, _C.FAILED_PRECONDITION, _C.UNAVAILABLE},
    "InvokeAgentUnary": {_C.NOT_FOUND, _C.FAILED_PRECONDITION, _C.UNAVAILABLE},
    "ProxyModel": {_C.NOT_FOUND, _C.FAILED_PRECONDITION, _C.UNAVAILABLE},
    "LoadModel": {_C.OK, _C.NOT_FOUND},
    "UnloadModel": {_C.OK, _C.NOT_FOUND, _C.UNAVAILABLE},
    # UNAVAILABLE: a blob the desired state wants whose download has not started.
    "FetchBlob": {_C.OK, _C.NOT_FOUND, _C.UNAVAILABLE},
}

BLOB = bytes(range(256)) * 1500
"""The one model blob the fuzzed node holds (more than one 256 KiB chunk)."""
BLOB_SHA256 = hashlib.sha256(BLOB).hexdigest()
SOURCES = ("https://models.invalid/m.gguf", "hf://org/repo/m.gguf", "pkg:llm-none")
"""Sources a FetchBlob may name (no node fetches them)."""


def hold_blob(data_dir: Path) -> None:
    """Put BLOB into the blob store in a node's data folder (before the node starts)."""
    partial = BlobStore(data_dir / "blobs").partial(BLOB_SHA256)
    partial.append(BLOB)
    partial.finish(BLOB_SHA256)


def _maybe(hostile: Hostile, valid: str, share: float = 0.15) -> str:
    return hostile.text() if hostile.rng.random() < share else valid


def _no_runtime(text: str) -> str:
    return "" if text in RUNTIME_NAMES else text


LEADER_TERM = U64[-1]
"""The term valid requests carry: the highest there is, so that no term a hostile request
raised the node to keeps the fuzzer's own pushes out."""


def _term(hostile: Hostile) -> int:
    """Mostly the fuzzer's own term; sometimes a lower one, which the node must refuse."""
    return LEADER_TERM if hostile.rng.random() < 0.9 else hostile.rng.choice([0, 1, 2**32])


def _no_file(text: str) -> str:
    try:
        exists = os.path.exists(os.path.expanduser(text))
    except (ValueError, RuntimeError):
        exists = False
    return "" if exists else text


@dataclass
class NodeApi:
    """NodeService for the runner; follows the generation and state the node accepted, and
    its routing table."""

    service = node_pb2.DESCRIPTOR.services_by_name["NodeService"]
    serial = frozenset(SERIAL)
    generation: int = 0
    """The newest generation the node accepted."""
    accepted: node_pb2.ApplyStateRequest | None = None
    """The request that brought it."""
    routes_generation: int = 0
    """The newest routing table the node accepted."""
    routes: node_pb2.ApplyRoutesRequest | None = None
    """The request that brought it."""

    def allowed(self, method: str) -> frozenset[str]:
        """Status codes the method may answer with."""
        return _ANY | {code.name for code in _ALLOWED.get(method, DEFAULT_ALLOWED)}

    def policy(self, method: str, payload: bytes) -> Policy:
        """WatchStatus never ends: its first snapshot is enough."""
        return Policy.FIRST if method == "WatchStatus" else Policy.TO_END

    def seed(self, method: str, hostile: Hostile) -> Message:
        """A valid request of the method."""
        rng = hostile.rng
        if method == "ApplyState":
            models = [common_pb2.ModelSpec(alias=a, tasks=["chat"]) for a in MODELS[:2]]
            agents = [common_pb2.AgentSpec(name=AGENTS[0], model=MODELS[0], tools=["time"])]
            return node_pb2.ApplyStateRequest(
                generation=min(self.generation + 1, U64[-1]),
                controller_id="fuzz",
                leader_term=LEADER_TERM,
                state=node_pb2.NodeDesiredState(models=models, agents=agents),
            )
        if method == "ApplyRoutes":
            return node_pb2.ApplyRoutesRequest(
                table=self._table(min(self.routes_generation + 1, U64[-1])),
                leader_term=LEADER_TERM,
            )
        if method in ("InvokeAgent", "InvokeAgentUnary"):
            return node_pb2.InvokeAgentRequest(
                agent=rng.choice(AGENTS),
                messages=[common_pb2.ChatMessage(role="user", content="Hello?")],
                options=common_pb2.GenerationOptions(max_tokens=8, temperature=0.0),
                request_id="fuzz-1",
            )
        if method == "ProxyModel":
            body = b'{"messages": [{"role": "user", "content": "Hi"}]}'
            return node_pb2.ProxyModelRequest(model=rng.choice(MODELS), body=body)
        if method in ("LoadModel", "UnloadModel"):
            return node_pb2.LoadModelRequest(alias=rng.choice(MODELS))
        if method == "WatchStatus":
            return node_pb2.WatchStatusRequest(controller_id="fuzz")
        if method == "FetchBlob":
            return node_pb2.FetchBlobRequest(
                sha256=rng.choice([BLOB_SHA256, BLOB_SHA256, "0" * 64]),
                offset=rng.choice([0, 1, len(BLOB) // 2, len(BLOB)]),
            )
        return node_pb2.GetInfoRequest()

    def structured(self, method: str, hostile: Hostile, progress: float) -> Message | None:
        """A request with hostile values in the places the node looks at."""
        if method == "ApplyState":
            return self._apply(hostile, progress)
        if method == "ApplyRoutes":
            return self._routes(hostile, progress)
        if method in ("InvokeAgent", "InvokeAgentUnary"):
            return self._invoke(hostile)
        if method == "ProxyModel":
            return node_pb2.ProxyModelRequest(
                model=_maybe(hostile, hostile.rng.choice(MODELS), 0.4),
                body=hostile.data(),
                request_id=_maybe(hostile, "", 0.3),
                generation=hostile.rng.choice([0, 0, self.generation, *U64]),
            )
        if method in ("LoadModel", "UnloadModel"):
            return node_pb2.LoadModelRequest(alias=_maybe(hostile, hostile.rng.choice(MODELS), 0.4))
        if method == "FetchBlob":
            return self._fetch_blob(hostile)
        return None

    def _fetch_blob(self, hostile: Hostile) -> node_pb2.FetchBlobRequest:
        """A held, unknown or malformed hash, a source or none, any offset."""
        rng = hostile.rng
        sha256 = rng.choice([BLOB_SHA256, BLOB_SHA256.upper(), BLOB_SHA256[:-1], "", "f" * 64])
        size = len(BLOB)
        return node_pb2.FetchBlobRequest(
            sha256=_maybe(hostile, sha256, 0.2),
            source=_maybe(hostile, rng.choice(["", "", *SOURCES]), 0.2),
            offset=rng.choice([0, size - 1, size, size + 1, *U64]),
        )

    def _apply(self, hostile: Hostile, progress: float) -> node_pb2.ApplyStateRequest:
        rng = hostile.rng
        aliases = rng.sample(MODELS, rng.choice([0, 1, 1, 2, 3]))
        if aliases and rng.random() < 0.05:
            aliases.append(aliases[0])
        models = [self._model(hostile, a) for a in aliases]
        agents = [
            self._agent(hostile, name, rng.choice(aliases) if aliases else "")
            for name in rng.sample(AGENTS, rng.choice([0, 1, 1, 2]))
        ]
        if agents and rng.random() < 0.05:
            agents.append(agents[0])
        limits = common_pb2.ResourceLimits()
        if rng.random() < 0.3:
            hostile.fill(limits)
        request = node_pb2.ApplyStateRequest(
            generation=self._generation(hostile, progress),
            controller_id=_maybe(hostile, "fuzz", 0.2),
            leader_term=_term(hostile),
            state=node_pb2.NodeDesiredState(models=models, agents=agents, limits=limits),
        )
        if rng.random() < 0.05:
            request.ClearField("state")
        return request

    def _generation(self, hostile: Hostile, progress: float, current: int | None = None) -> int:
        """A generation near `current` (the state's by default), the largest only late."""
        base = self.generation if current is None else current
        return min(self._pick_generation(hostile, progress, base), U64[-1])

    def _pick_generation(self, hostile: Hostile, progress: float, base: int) -> int:
        rng, pick = hostile.rng, hostile.rng.random()
        if pick < 0.7:
            return base + 1
        if pick < 0.8:
            return base
        if pick < 0.85:
            return max(base - 1, 0)
        if pick < 0.9:
            return 0
        extremes = U64 if progress > LATE else [g for g in U64 if g < 2**40]
        return base + rng.randrange(2, 1000) if pick < 0.95 else rng.choice(extremes)

    def _table(self, generation: int) -> node_pb2.RoutingTable:
        """A valid routing table: the node's agent and models on two peers."""
        replicas = [
            node_pb2.RouteReplica(node_id=n, address=f"127.0.0.1:{9 + i}", generation=1)
            for i, n in enumerate(NODES)
        ]
        return node_pb2.RoutingTable(
            generation=generation,
            controller_id="fuzz",
            deployments=[
                node_pb2.DeploymentRoutes(
                    name="fuzz",
                    distributed=True,
                    strategy="peak-ewma",
                    agents=[node_pb2.AgentRoute(name=AGENTS[0], instructions="Answer briefly.")],
                    models=[node_pb2.ModelRoute(alias=MODELS[0], tasks=["chat"], primary=True)],
                )
            ],
            targets=[
                node_pb2.TargetRoutes(name=AGENTS[0], agent=True, replicas=replicas),
                node_pb2.TargetRoutes(name=MODELS[0], replicas=replicas[:1]),
            ],
            api_key_digests=["0" * 64],
        )

    def _routes(self, hostile: Hostile, progress: float) -> node_pb2.ApplyRoutesRequest:
        """A table with hostile names, strategies, escalations, replicas and digests."""
        rng = hostile.rng
        table = self._table(self._generation(hostile, progress, self.routes_generation))
        for deployment in table.deployments:
            deployment.name = _maybe(hostile, deployment.name, 0.2)
            deployment.strategy = _maybe(hostile, rng.choice(STRATEGIES), 0.3)
            if rng.random() < 0.3:
                hostile.fill(deployment.escalation)
            if rng.random() < 0.2:
                hostile.fill(deployment.agents.add())
        for target in table.targets:
            target.name = _maybe(hostile, target.name, 0.2)
            for replica in target.replicas:
                replica.node_id = _maybe(hostile, replica.node_id, 0.2)
                replica.address = _maybe(hostile, replica.address, 0.2)
                replica.generation = rng.choice([0, 1, *U64]) if rng.random() < 0.2 else 1
        if rng.random() < 0.2:
            hostile.fill(table.targets.add())
        if rng.random() < 0.2:
            table.api_key_digests.extend(hostile.text() for _ in range(rng.choice([1, 2, 50])))
        if rng.random() < 0.05:
            return node_pb2.ApplyRoutesRequest()  # no table at all
        return node_pb2.ApplyRoutesRequest(table=table, leader_term=_term(hostile))

    def _model(self, hostile: Hostile, alias: str) -> common_pb2.ModelSpec:
        rng = hostile.rng
        spec = common_pb2.ModelSpec(alias=_maybe(hostile, alias, 0.1))
        if rng.random() < 0.15:
            spec.runtime = _no_runtime(hostile.text())
        if rng.random() < 0.15:
            spec.source = _no_file(hostile.text())
        if rng.random() < 0.15:
            spec.quantization = hostile.text()
        if rng.random() < 0.15:
            spec.memory_bytes = rng.choice(U64)
        spec.tasks.extend(hostile.text() for _ in range(rng.choice([0, 0, 1, 2])))
        return spec

    def _agent(self, hostile: Hostile, name: str, model: str) -> common_pb2.AgentSpec:
        rng = hostile.rng
        return common_pb2.AgentSpec(
            name=_maybe(hostile, name, 0.1),
            model=_maybe(hostile, model, 0.1),
            tools=[_maybe(hostile, t, 0.1) for t in rng.sample(TOOLS, rng.choice([0, 1, 2]))],
            instructions=_maybe(hostile, "Answer briefly.", 0.2),
            tasks=[hostile.text() for _ in range(rng.choice([0, 0, 1]))],
            tool_config_json=hostile.json() if rng.random() < 0.2 else "",
        )

    def _invoke(self, hostile: Hostile) -> node_pb2.InvokeAgentRequest:
        rng = hostile.rng
        messages = [
            common_pb2.ChatMessage(
                role=_maybe(hostile, rng.choice(ROLES), 0.2),
                content=_maybe(hostile, "Hello?", 0.3),
                name=_maybe(hostile, "", 0.1),
                tool_call_id=_maybe(hostile, "", 0.1),
            )
            for _ in range(rng.choice([0, 1, 1, 2, 5]))
        ]
        for message in messages:
            if rng.random() < 0.1:
                hostile.fill(message.tool_calls.add())
        options = common_pb2.GenerationOptions()
        if rng.random() < 0.4:
            hostile.fill(options)
        generation = rng.choice([0, 0, 0, self.generation, min(self.generation + 1, U64[-1]), *U64])
        return node_pb2.InvokeAgentRequest(
            agent=_maybe(hostile, rng.choice(AGENTS), 0.3),
            messages=messages,
            options=options,
            request_id=_maybe(hostile, "", 0.2),
            generation=generation,
        )

    def tame(self, method: str, message: Message, hostile: Hostile, progress: float) -> Message:
        """An ApplyState's or ApplyRoutes' generation as for structured ones (the largest
        only late)."""
        if isinstance(message, node_pb2.ApplyStateRequest) and hostile.rng.random() < 0.8:
            message.generation = self._generation(hostile, progress)
        if isinstance(message, node_pb2.ApplyRoutesRequest) and hostile.rng.random() < 0.8:
            message.table.generation = self._generation(hostile, progress, self.routes_generation)
        return message

    def observe(self, outcome: Outcome) -> None:
        """Follow the accepted applies of states and routing tables."""
        if outcome.case.method.name == "ApplyRoutes":
            routes = node_pb2.ApplyRoutesRequest.FromString(outcome.case.payload)
            answer = node_pb2.ApplyRoutesResponse.FromString(outcome.responses[0])
            assert answer.generation == routes.table.generation, (routes.table.generation, answer)
            if routes.table.generation > self.routes_generation:
                self.routes_generation, self.routes = routes.table.generation, routes
            return
        request = node_pb2.ApplyStateRequest.FromString(outcome.case.payload)
        response = node_pb2.ApplyStateResponse.FromString(outcome.responses[0])
        assert response.generation == request.generation, (request.generation, response)
        if request.generation > self.generation:
            self.generation, self.accepted = request.generation, request
