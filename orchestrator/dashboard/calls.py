"""The dashboard's API calls: each reads its query or body, calls the controller API in
process and returns what the page gets (JSON, or a stream of events)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import grpc

from edgefleet.v1 import controller_pb2
from edgefleet_common.grpc_errors import StatusError
from orchestrator.api import MAX_EVENT_ID, ControllerService
from orchestrator.dashboard import rpc_bridge
from orchestrator.dashboard.revision_diff import revision_diff
from orchestrator.dashboard.rpc_bridge import as_json
from orchestrator.dashboard.sse import event_stream
from orchestrator.dashboard.traffic import STEP_S, WINDOW_S, Traffic

Query = Mapping[str, str]
Json = dict[str, Any]
NODE_ACTIONS = ("cordon", "drain", "uncordon", "revoke")


def bad_request(message: str) -> StatusError:
    """A request the dashboard API cannot take (400)."""
    return StatusError(grpc.StatusCode.INVALID_ARGUMENT, message)


def number(query: Query, name: str, *, default: int | None = None, top: int = MAX_EVENT_ID) -> int:
    """A whole number from the query (0..top); 400 saying what is wrong otherwise."""
    text = query.get(name, "").strip()
    if not text:
        if default is None:
            raise bad_request(f"`{name}` is required (a revision number, e.g. ?{name}=1)")
        return default
    if not text.isdigit() or int(text) > top:
        raise bad_request(f"`{name}` must be a whole number from 0 to {top}, not `{text}`")
    return int(text)


def reason_of(body: Json) -> str:
    """The `reason` of an action's body ("" when not given)."""
    reason = body.get("reason", "")
    if not isinstance(reason, str):
        raise bad_request("`reason` must be a string")
    return reason


class DashboardCalls:
    """The calls behind `/ui/api/*`, over one controller API in this process."""

    def __init__(
        self,
        service: ControllerService,
        traffic: Traffic,
        escalated: Callable[[], Mapping[str, int]] = dict,
    ) -> None:
        """`escalated()`: escalated requests since the gateway started, by `kind/name`."""
        self._service = service
        self._traffic = traffic
        self._escalated = escalated
        self.closing = asyncio.Event()
        """Set when the controller stops: event streams end."""

    async def status(self, query: Query) -> Json:
        events = number(query, "events", default=0, top=1000)
        request = controller_pb2.GetStatusRequest(events=events)
        return as_json(await rpc_bridge.call(self._service.GetStatus, request))

    async def nodes(self, query: Query) -> Json:
        request = controller_pb2.ListNodesRequest()
        return as_json(await rpc_bridge.call(self._service.ListNodes, request))

    async def agents(self, query: Query) -> Json:
        request = controller_pb2.ListAgentsRequest()
        return as_json(await rpc_bridge.call(self._service.ListAgents, request))

    async def models(self, query: Query) -> Json:
        request = controller_pb2.ListModelsRequest()
        return as_json(await rpc_bridge.call(self._service.ListModels, request))

    async def endpoints(self, query: Query) -> Json:
        request = controller_pb2.ListEndpointsRequest()
        return as_json(await rpc_bridge.call(self._service.ListEndpoints, request))

    async def revisions(self, query: Query) -> Json:
        request = controller_pb2.ListRevisionsRequest(
            deployment=query.get("deployment", ""), with_manifest=query.get("manifest") == "1"
        )
        return as_json(await rpc_bridge.call(self._service.ListRevisions, request))

    async def diff(self, query: Query) -> Json:
        deployment = query.get("deployment", "")
        if not deployment:
            raise bad_request("`deployment` is required (?deployment=NAME&from=N&to=M)")
        old, new = number(query, "from"), number(query, "to")
        request = controller_pb2.ListRevisionsRequest(deployment=deployment, with_manifest=True)
        listed = await rpc_bridge.call(self._service.ListRevisions, request)
        text = revision_diff(listed.revisions, deployment, old, new)
        return {"deployment": deployment, "from": old, "to": new, "diff": text}

    async def metrics(self, query: Query) -> Json:
        escalations = [
            {"object": obj, "requests": count} for obj, count in sorted(self._escalated().items())
        ]
        return {
            "window_s": WINDOW_S,
            "step_s": STEP_S,
            "series": self._traffic.series(),
            "escalations": escalations,
        }

    def events(self, query: Query, last_event_id: str = "") -> AsyncIterator[bytes]:
        """Stored events after `after` (or the `Last-Event-ID` a reconnecting browser
        sends), the newest `limit` of them when given, then new ones as they happen."""
        after = number({"after": last_event_id or query.get("after", "")}, "after", default=0)
        limit = number(query, "limit", default=0, top=10_000)
        request = controller_pb2.WatchEventsRequest(
            after_id=after, follow=True, limit=limit, object=query.get("object", "")
        )
        return event_stream(rpc_bridge.stream(self._service.WatchEvents, request), self.closing)

    async def node_action(self, node_id: str, action: str, body: Json) -> Json:
        """cordon | drain | uncordon | revoke a node; the RPC's reply."""
        reason = reason_of(body)
        service = self._service
        if action == "revoke":
            revoke = controller_pb2.RevokeNodeRequest(node_id=node_id, reason=reason)
            return as_json(await rpc_bridge.call(service.RevokeNode, revoke))
        methods = {
            "cordon": service.CordonNode,
            "drain": service.DrainNode,
            "uncordon": service.UncordonNode,
        }
        request = controller_pb2.NodeMaintenanceRequest(node_id=node_id, reason=reason)
        return as_json(await rpc_bridge.call(methods[action], request))

    async def rollback(self, deployment: str, body: Json) -> Json:
        """Roll `deployment` back to revision `to` (0 or absent: the one before)."""
        to = body.get("to", 0)
        if isinstance(to, bool) or not isinstance(to, int) or not 0 <= to < 2**32:
            raise bad_request('`to` must be a revision number (e.g. {"to": 2})')
        request = controller_pb2.RollbackRequest(deployment=deployment, to_revision=to)
        return as_json(await rpc_bridge.call(self._service.Rollback, request))
