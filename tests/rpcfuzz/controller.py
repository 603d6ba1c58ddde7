"""The controller API's fuzz cases, what each method may answer, and the state they leave.

Manifests are built as documents and spoiled in one place (a hostile value, a
missing or unknown key, a duplicate item) or as text (cut, flipped, YAML bombs).
None names a node address: the controller must dial nobody. A distributed manifest
names node edge-a, which the maintenance calls (cordon, drain, uncordon) may then mark.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass, field
from typing import Any

import grpc
import yaml
from google.protobuf.message import DecodeError, Message

from edgefleet.v1 import common_pb2, controller_pb2
from edgefleet_common.pki import admin_csr, new_key, node_csr
from tests.rpcfuzz.runner import DEFAULT_ALLOWED, Outcome, Policy
from tests.rpcfuzz.values import FLOATS, I64, U32, U64, WEIRD_TEXT, Hostile

DEPLOYMENTS = ("fuzz-shop", "fuzz-home")
AGENTS = ("helper", "planner", "front-desk")
MODELS = ("fuzz-model", "tiny")
NODES = ("edge-a", "edge-b")
ADMINS = ("fuzz-admin", "ops-1")
NAMES = (*DEPLOYMENTS, *AGENTS, *MODELS, *NODES, "deployment/fuzz-shop", "node/edge-a")

_C = grpc.StatusCode
_ANY = frozenset({_C.INVALID_ARGUMENT.name, _C.RESOURCE_EXHAUSTED.name})
_ALLOWED = {
    "Apply": {_C.OK, _C.FAILED_PRECONDITION},
    "Diff": {_C.OK, _C.FAILED_PRECONDITION},
    "Delete": {_C.OK, _C.NOT_FOUND},
    "Rollback": {_C.OK, _C.NOT_FOUND, _C.FAILED_PRECONDITION},
    "ListRevisions": {_C.OK},
    "GetStatus": {_C.OK},
    "ListNodes": {_C.OK},
    "ListAgents": {_C.OK},
    "ListModels": {_C.OK},
    "ListEndpoints": {_C.OK},
    "WatchEvents": {_C.OK},
    # No node serves anything: the router's documented answer is UNAVAILABLE (no ready
    # replica).
    "Chat": {_C.NOT_FOUND, _C.UNAVAILABLE},
    # A node a deployment names (edge-a) is known; any other is NOT_FOUND.
    "CordonNode": {_C.OK, _C.NOT_FOUND},
    "DrainNode": {_C.OK, _C.NOT_FOUND},
    "UncordonNode": {_C.OK, _C.NOT_FOUND},
    "GetDrainProgress": {_C.OK, _C.NOT_FOUND},
    # Admin certificates: a bad name, request or lifetime is INVALID_ARGUMENT (in _ANY).
    "CreateAdmin": {_C.OK},
    "RevokeAdmin": {_C.OK, _C.NOT_FOUND},
    "ListAdmins": {_C.OK},
}
MAINTENANCE = frozenset({"CordonNode", "DrainNode", "UncordonNode"})
YAML_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
    f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
    for i in range(9)
)
HOSTILE_DOCUMENTS = (
    "", "\x00", "\ufeff", "---", "--- |\n  text", "deployment:", "deployment: null",
    "deployment: []", "[" * 10_000, "{" * 10_000, "- " * 5_000 + "x", YAML_BOMB,
    "deployment: !!python/object/apply:os.system ['id']", "deployment: !!binary AAAA",
    "deployment: &d {type: single-device}\nother: *d\n<<: *d",
    "deployment:\n  type: single-device\ndeployment:\n  type: single-device\n",
    "deployment:\n\ttype: single-device", "%YAML 9.9\n---\na: 1", "a: 1\n---\nb: 2\n",
    "deployment: {type: single-device, name: " + "x" * 2_000_000 + "}",
)  # fmt: skip


@functools.cache
def signing_requests() -> tuple[str, ...]:
    """Valid requests for the admin names, and a node's (its subject is not the point)."""
    key = new_key()
    made = [admin_csr(key, name).decode() for name in ADMINS]
    return (*made, node_csr(key, "edge-a").decode())


def manifest(rng: Any, deployment: str, *, distributed: bool) -> dict[str, Any]:
    """A valid manifest document (two models, one or two agents; no addresses)."""
    agents = [
        {"name": name, "model": MODELS[i % 2], "tools": ["time"], "instructions": "Be brief."}
        for i, name in enumerate(rng.sample(AGENTS, rng.choice([1, 2])))
    ]
    body: dict[str, Any] = {
        "type": "distributed-edge" if distributed else "single-device",
        "name": deployment,
        "models": [{"alias": alias, "tasks": ["chat"]} for alias in MODELS],
        "agents": agents,
    }
    if distributed:
        body["nodes"] = [
            {"id": NODES[0], "agents": [a["name"] for a in agents], "models": list(MODELS)}
        ]
    return {"deployment": body}


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*path, index))
    return found


def _value(hostile: Hostile) -> Any:
    rng = hostile.rng
    return rng.choice(
        [
            hostile.text(),
            rng.choice(U64),
            rng.choice(I64),
            rng.choice(FLOATS),
            rng.choice([True, False, None]),
            [rng.choice(WEIRD_TEXT[:40])] * rng.choice([0, 1, 3, 1000]),
            {hostile.text(): hostile.text()},
            rng.choice(["999999999TiB", "-1GiB", "1e400B", "0.5B", "-5s", "99999999999h", "0s"]),
        ]
    )


def spoil(document: dict[str, Any], hostile: Hostile) -> dict[str, Any]:
    """The document with one place made hostile."""
    rng = hostile.rng
    document = copy.deepcopy(document)
    *parent_path, key = rng.choice(_paths(document)[1:])
    parent: Any = document
    for part in parent_path:
        parent = parent[part]
    pick = rng.random()
    if pick < 0.6:
        parent[key] = _value(hostile)
    elif pick < 0.75:
        del parent[key]
    elif pick < 0.9 and isinstance(parent, list):
        parent.append(copy.deepcopy(parent[key]))
    elif isinstance(parent, dict):
        parent[rng.choice(WEIRD_TEXT[:20]) or "extra"] = _value(hostile)
    return document


def _text_mutation(text: str, hostile: Hostile) -> str:
    rng = hostile.rng
    at = rng.randrange(len(text) + 1)
    pick = rng.random()
    if pick < 0.3:
        return text[:at]
    if pick < 0.6:
        return text[:at] + chr(hostile.code_point()) + text[at + 1 :]
    if pick < 0.8:
        return text[:at] + rng.choice(["\t", ":", "- ", "&a ", "*a", "\x00", "'", "{"]) + text[at:]
    return text + text


@dataclass
class ControllerApi:
    """ControllerService for the runner; follows the deployments the controller stores."""

    service = controller_pb2.DESCRIPTOR.services_by_name["ControllerService"]
    serial = frozenset({"Apply", "Delete", "Rollback", *MAINTENANCE})
    deployments: dict[str, int] = field(default_factory=dict)
    """Deployment name -> its current revision number, as the accepted requests left them."""
    marks: dict[str, str] = field(default_factory=dict)
    """Node id -> `cordoned` or `draining`, as the accepted maintenance requests left them."""

    def allowed(self, method: str) -> frozenset[str]:
        """Status codes the method may answer with."""
        return _ANY | {code.name for code in _ALLOWED.get(method, DEFAULT_ALLOWED)}

    def policy(self, method: str, payload: bytes) -> Policy:
        """A WatchEvents stream that follows may stay silent; all others must end."""
        if method != "WatchEvents":
            return Policy.TO_END
        try:
            follow = controller_pb2.WatchEventsRequest.FromString(payload).follow
        except DecodeError:  # the server refuses it: the stream ends at once
            return Policy.TO_END
        return Policy.OPEN if follow else Policy.TO_END

    def seed(self, method: str, hostile: Hostile) -> Message:
        """A valid request of the method."""
        rng = hostile.rng
        deployment = rng.choice(DEPLOYMENTS)
        if method in ("Apply", "Diff"):
            document = manifest(rng, deployment, distributed=rng.random() < 0.5)
            text = yaml.safe_dump(document, sort_keys=False)
            return controller_pb2.ApplyRequest(manifest=text, source=f"{deployment}.yaml")
        if method == "Delete":
            return controller_pb2.DeleteRequest(deployment=deployment, dry_run=True)
        if method == "Rollback":
            return controller_pb2.RollbackRequest(deployment=deployment, dry_run=True)
        if method == "ListRevisions":
            return controller_pb2.ListRevisionsRequest(deployment=deployment)
        if method == "Chat":
            return controller_pb2.ChatRequest(
                agent=rng.choice(AGENTS),
                messages=[common_pb2.ChatMessage(role="user", content="Hi")],
            )
        if method == "WatchEvents":
            return controller_pb2.WatchEventsRequest(limit=5)
        if method == "GetStatus":
            return controller_pb2.GetStatusRequest(events=3)
        if method in MAINTENANCE:
            return controller_pb2.NodeMaintenanceRequest(node_id=rng.choice(NODES), reason="fuzz")
        if method == "GetDrainProgress":
            return controller_pb2.GetDrainProgressRequest(node_id=rng.choice(NODES))
        if method == "ListEndpoints":
            return controller_pb2.ListEndpointsRequest()
        if method == "CreateAdmin":
            return controller_pb2.CreateAdminRequest(
                name=rng.choice(ADMINS), csr_pem=signing_requests()[0]
            )
        if method == "RevokeAdmin":
            return controller_pb2.RevokeAdminRequest(name=rng.choice(ADMINS))
        if method == "ListAdmins":
            return controller_pb2.ListAdminsRequest()
        return controller_pb2.ListNodesRequest()

    def structured(self, method: str, hostile: Hostile, progress: float) -> Message | None:
        """A request with hostile values in the places the controller looks at."""
        rng = hostile.rng
        name = rng.choice(DEPLOYMENTS) if rng.random() < 0.6 else hostile.text()
        if method in ("Apply", "Diff"):
            text = self._manifest(hostile)
            source = rng.choice([f"{name}.yaml", "", hostile.text()])
            if method == "Diff":
                return controller_pb2.DiffRequest(manifest=text, source=source)
            return controller_pb2.ApplyRequest(
                manifest=text, source=source, dry_run=rng.random() < 0.3
            )
        if method == "Delete":
            return controller_pb2.DeleteRequest(deployment=name, dry_run=rng.random() < 0.5)
        if method == "Rollback":
            return controller_pb2.RollbackRequest(
                deployment=rng.choice([name, ""]),
                to_revision=rng.choice([*U32, 0, 0, 1, 2]),
                dry_run=rng.random() < 0.3,
            )
        if method == "ListRevisions":
            return controller_pb2.ListRevisionsRequest(
                deployment=rng.choice([name, ""]), with_manifest=rng.random() < 0.5
            )
        if method == "GetStatus":
            return controller_pb2.GetStatusRequest(events=rng.choice(U32))
        if method == "WatchEvents":
            return controller_pb2.WatchEventsRequest(
                after_id=rng.choice([*U64, 0, 0, 1]),
                follow=rng.random() < 0.3,
                limit=rng.choice([*U32, 0, 0]),
                object=rng.choice(["", f"deployment/{name}", hostile.text()]),
            )
        if method in MAINTENANCE or method == "GetDrainProgress":
            node = rng.choice([*NODES, *NODES, "", "x" * 64, hostile.text()])
            if method == "GetDrainProgress":
                return controller_pb2.GetDrainProgressRequest(node_id=node)
            reason = rng.choice(["", "fuzz", "r" * 201, hostile.text()])
            return controller_pb2.NodeMaintenanceRequest(node_id=node, reason=reason)
        if method == "Chat":
            request = controller_pb2.ChatRequest(agent=rng.choice([*AGENTS, hostile.text()]))
            for _ in range(rng.choice([0, 1, 2])):
                hostile.fill(request.messages.add())
            if rng.random() < 0.3:
                hostile.fill(request.options)
            return request
        if method in ("CreateAdmin", "RevokeAdmin"):
            return self._admin(method, hostile)
        return None

    def _admin(self, method: str, hostile: Hostile) -> Message:
        rng = hostile.rng
        name = rng.choice([*ADMINS, *ADMINS, "", "Admin", "a" * 64, "-x", hostile.text()])
        if method == "RevokeAdmin":
            return controller_pb2.RevokeAdminRequest(name=name)
        valid = rng.choice(signing_requests())
        cut, flipped = valid[: rng.randrange(len(valid))], valid.replace("A", "B", 1)
        header = "-----BEGIN CERTIFICATE REQUEST-----\n"
        csr = rng.choice([valid, valid, cut, flipped, "", hostile.text(), header + hostile.text()])
        return controller_pb2.CreateAdminRequest(
            name=name, csr_pem=csr, lifetime_days=rng.choice([0, 0, 1, 3650, 3651, *U32])
        )

    def _manifest(self, hostile: Hostile) -> str:
        rng = hostile.rng
        pick = rng.random()
        if pick < 0.1:
            return rng.choice(HOSTILE_DOCUMENTS)
        document = manifest(rng, rng.choice(DEPLOYMENTS), distributed=rng.random() < 0.5)
        if pick < 0.8:
            document = spoil(document, hostile)
        text = yaml.safe_dump(document, sort_keys=False, allow_unicode=rng.random() < 0.5)
        return _text_mutation(text, hostile) if pick > 0.9 else text

    def tame(self, method: str, message: Message, hostile: Hostile, progress: float) -> Message:
        """Every hostile value may come at any time."""
        return message

    def observe(self, outcome: Outcome) -> None:
        """Follow the deployments that accepted requests stored, changed or deleted, and the
        nodes they cordoned, drained or uncordoned."""
        method, payload = outcome.case.method.name, outcome.case.payload
        if method in MAINTENANCE:
            node = controller_pb2.NodeMaintenanceResponse.FromString(outcome.responses[0]).node
            if node.mark:
                self.marks[node.id] = node.mark
            else:
                self.marks.pop(node.id, None)
            return
        if method == "Delete":
            deleted = controller_pb2.DeleteResponse.FromString(outcome.responses[0]).deleted
            if deleted:
                self.deployments.pop(controller_pb2.DeleteRequest.FromString(payload).deployment)
            return
        response = controller_pb2.ApplyResponse.FromString(outcome.responses[0])
        dry_run = (
            (controller_pb2.ApplyRequest if method == "Apply" else controller_pb2.RollbackRequest)
            .FromString(payload)
            .dry_run
        )
        if not dry_run and response.changed:
            self.deployments[response.revision.deployment] = response.revision.number
