"""The controller API over gRPC: apply, diff, delete, rollback, status, events, chat,
node maintenance (cordon, drain, uncordon) and admin certificates.

Every mutation is all or nothing: a manifest is validated (and checked against
the other deployments) before anything is stored, and a stored revision is
acted on by the reconciler, never half here.
"""

from __future__ import annotations

import asyncio
import difflib
import hashlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence

import grpc

from edgefleet.v1 import controller_pb2, controller_pb2_grpc, node_pb2
from edgefleet_common.grpc_errors import Ctx
from edgefleet_common.version import __version__
from edgefleet_contract.routing import RoutingIndex
from edgefleet_contract.wire import timestamp
from edgefleet_dataplane.router import Router
from orchestrator.admin_service import AdminCalls
from orchestrator.api_errors import ApiError, streaming, unary
from orchestrator.callers import caller_name
from orchestrator.control_plane_view import single_control_plane
from orchestrator.endpoint_views import endpoints
from orchestrator.events import EventLog
from orchestrator.fleet.fleet import Fleet
from orchestrator.maintenance import Maintenance, MaintenanceCalls
from orchestrator.manifest import DesiredState, ManifestError, load_text
from orchestrator.reconciler import Reconciler
from orchestrator.routes_publisher import RoutesPublisher
from orchestrator.scheduler import Plan, check_conflicts
from orchestrator.store import EventRow, Revision, StateStore
from orchestrator.trust.admin import TrustAdmin
from orchestrator.views import (
    agent_views,
    deployment_views,
    model_views,
    node_views,
    plan_view,
    revision_view,
)

CHAT_TIMEOUT_S = 300.0
RECENT_EVENTS = 10
MAX_EVENT_ID = 2**63 - 1
"""Event ids are SQLite row ids (signed 64-bit)."""

_SEVERITIES = {
    "info": controller_pb2.Event.SEVERITY_INFO,
    "warning": controller_pb2.Event.SEVERITY_WARNING,
    "error": controller_pb2.Event.SEVERITY_ERROR,
}


def digest(desired: DesiredState) -> str:
    """A content hash of a desired state: equal states, equal digests."""
    return hashlib.sha256(desired.model_dump_json().encode()).hexdigest()


def event_view(row: EventRow) -> controller_pb2.Event:
    """A stored event as the API returns it."""
    return controller_pb2.Event(
        id=row.id,
        time=timestamp(row.time),
        severity=_SEVERITIES.get(row.severity, controller_pb2.Event.SEVERITY_INFO),
        reason=row.reason,
        object=row.object,
        node_id=row.node_id,
        message=row.message,
    )


class ControllerService(
    MaintenanceCalls, AdminCalls, controller_pb2_grpc.ControllerServiceServicer
):
    """The ControllerService RPCs (see `MaintenanceCalls` and `AdminCalls` for the rest)."""

    def __init__(
        self,
        store: StateStore,
        fleet: Fleet,
        reconciler: Reconciler,
        events: EventLog,
        router: Router,
        *,
        gateway_url: str = "",
        trust: TrustAdmin | None = None,
        routes: RoutesPublisher | None = None,
        gateway_adverts: Mapping[str, str] | None = None,
        control_plane: Callable[[], controller_pb2.ControlPlane] | None = None,
    ) -> None:
        """`trust` answers the credential and admin calls (FAILED_PRECONDITION without it);
        `routes` makes the routing table; `gateway_adverts`: node id → its advertised gateway
        URL; `control_plane` says who leads (default: this controller alone)."""
        self._trust = trust or TrustAdmin(None, fleet, events)
        self._store = store
        self._fleet = fleet
        self._reconciler = reconciler
        self._events = events
        self._router = router
        self._gateway_url = gateway_url
        self._routes = routes or RoutesPublisher(
            store, fleet, assignment=dict, index=RoutingIndex, key_digests=tuple
        )
        self._adverts = gateway_adverts if gateway_adverts is not None else {}
        self._control_plane = control_plane or (lambda: single_control_plane(store))
        self._mutating = asyncio.Lock()
        self._maintenance = Maintenance.of(fleet, events, reconciler)

    # -- changing what runs ----------------------------------------------------------

    def _load(self, manifest: str, source: str) -> DesiredState:
        try:
            return load_text(manifest, source=source or "<manifest>").desired
        except ManifestError as exc:
            raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from exc

    def _others(self, name: str) -> list[DesiredState]:
        return [d for d in self._reconciler.deployments() if d.name != name]

    def _check(self, deployments: Sequence[DesiredState]) -> None:
        problems = check_conflicts(deployments)
        if problems:
            raise ApiError(grpc.StatusCode.FAILED_PRECONDITION, "; ".join(problems))

    def _current(self, name: str) -> Revision | None:
        return next((r for r in self._store.current() if r.deployment == name), None)

    def _preview(self, desired: DesiredState) -> tuple[Revision | None, Plan]:
        """The deployment's current revision, and the plan if `desired` replaced it
        (FAILED_PRECONDITION when it conflicts with the other deployments)."""
        deployments = [*self._others(desired.name), desired]
        self._check(deployments)
        return self._current(desired.name), self._reconciler.preview(deployments).plan

    async def _apply(
        self,
        desired: DesiredState,
        *,
        manifest: str,
        source: str,
        cause: str,
        dry_run: bool,
        always_new_revision: bool = False,
    ) -> controller_pb2.ApplyResponse:
        """Store `desired` as its deployment's next revision (unless it is the current one
        and `always_new_revision` is off, as for a rollback it is not) and reconcile."""
        current, plan = self._preview(desired)
        fingerprint = digest(desired)
        changed = current is None or current.digest != fingerprint or always_new_revision
        response = controller_pb2.ApplyResponse(plan=plan_view(plan), changed=changed)
        if dry_run or not changed:
            number = (current.number if current else 0) + (1 if changed else 0)
            response.revision.CopyFrom(
                controller_pb2.Revision(
                    deployment=desired.name, number=number, digest=fingerprint, source=source
                )
            )
            return response
        revision = self._store.add_revision(
            desired.name,
            source=source,
            manifest=manifest,
            desired_json=desired.model_dump_json(),
            digest=fingerprint,
            cause=cause,
        )
        self._events.record(
            "info",
            "DeploymentApplied",
            f"deployment/{desired.name}",
            f"revision {revision.number} of {desired.name} applied ({cause}, from {source})",
        )
        self._reconciler.trigger()
        response.revision.CopyFrom(revision_view(revision))
        return response

    @unary
    async def Apply(
        self, request: controller_pb2.ApplyRequest, context: Ctx
    ) -> controller_pb2.ApplyResponse:
        desired = self._load(request.manifest, request.source)
        async with self._mutating:
            return await self._apply(
                desired,
                manifest=request.manifest,
                source=request.source,
                cause=f"apply by {caller_name(context)}",
                dry_run=request.dry_run,
            )

    @unary
    async def Diff(
        self, request: controller_pb2.DiffRequest, context: Ctx
    ) -> controller_pb2.DiffResponse:
        desired = self._load(request.manifest, request.source)
        current, plan = self._preview(desired)
        text_diff = "".join(
            difflib.unified_diff(
                (current.manifest if current else "").splitlines(keepends=True),
                request.manifest.splitlines(keepends=True),
                fromfile=f"{desired.name} (revision {current.number})" if current else "/dev/null",
                tofile=request.source or "manifest",
            )
        )
        return controller_pb2.DiffResponse(
            plan=plan_view(plan),
            changed=plan.changed or current is None or current.digest != digest(desired),
            manifest_diff=text_diff,
            current_revision=current.number if current else 0,
        )

    @unary
    async def Delete(
        self, request: controller_pb2.DeleteRequest, context: Ctx
    ) -> controller_pb2.DeleteResponse:
        async with self._mutating:
            name = request.deployment
            if self._current(name) is None:
                known = ", ".join(r.deployment for r in self._store.current()) or "none"
                raise ApiError(
                    grpc.StatusCode.NOT_FOUND, f"no deployment named `{name}`; deployments: {known}"
                )
            plan = self._reconciler.preview(self._others(name)).plan
            if request.dry_run:
                return controller_pb2.DeleteResponse(plan=plan_view(plan), deleted=False)
            self._store.delete_deployment(name)
            self._events.record(
                "info", "DeploymentDeleted", f"deployment/{name}", f"deployment {name} deleted"
            )
            self._reconciler.trigger()
            return controller_pb2.DeleteResponse(plan=plan_view(plan), deleted=True)

    @unary
    async def Rollback(
        self, request: controller_pb2.RollbackRequest, context: Ctx
    ) -> controller_pb2.ApplyResponse:
        async with self._mutating:
            name = request.deployment or self._only_deployment()
            current = self._current(name)
            if current is None:
                raise ApiError(grpc.StatusCode.NOT_FOUND, f"no deployment named `{name}`")
            target = request.to_revision or current.number - 1
            if target < 1:
                raise ApiError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"{name} has only revision {current.number}: nothing to roll back to",
                )
            revision = self._store.revision(name, target)
            if revision is None:
                numbers = ", ".join(str(r.number) for r in self._store.revisions(name))
                raise ApiError(
                    grpc.StatusCode.NOT_FOUND,
                    f"{name} has no revision {target}; it has: {numbers}",
                )
            desired = DesiredState.model_validate_json(revision.desired_json)
            return await self._apply(
                desired,
                manifest=revision.manifest,
                source=revision.source,
                cause=f"rollback to {target} by {caller_name(context)}",
                dry_run=request.dry_run,
                always_new_revision=True,
            )

    def _only_deployment(self) -> str:
        names = [r.deployment for r in self._store.current()]
        if len(names) != 1:
            raise ApiError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "name the deployment to roll back; deployments: " + (", ".join(names) or "none"),
            )
        return names[0]

    @unary
    async def ListRevisions(
        self, request: controller_pb2.ListRevisionsRequest, context: Ctx
    ) -> controller_pb2.ListRevisionsResponse:
        name = request.deployment or self._only_deployment()
        return controller_pb2.ListRevisionsResponse(
            revisions=[
                revision_view(r, with_manifest=request.with_manifest)
                for r in self._store.revisions(name)
            ]
        )

    # -- what is running -------------------------------------------------------------

    def _nodes(self) -> list[controller_pb2.NodeView]:
        return node_views(self._fleet, self._reconciler.assignment)

    def _agents(self) -> list[controller_pb2.AgentView]:
        schedule = self._reconciler.last_schedule
        return agent_views(
            self._reconciler.deployments(),
            self._fleet,
            self._reconciler.assignment,
            schedule.plan if schedule else None,
            self._router.stats,
        )

    def _models(self) -> list[controller_pb2.ModelView]:
        return model_views(
            self._reconciler.deployments(),
            self._fleet,
            self._reconciler.assignment,
            self._router.stats,
        )

    @unary
    async def GetStatus(
        self, request: controller_pb2.GetStatusRequest, context: Ctx
    ) -> controller_pb2.ClusterStatus:
        agents = self._agents()
        schedule = self._reconciler.last_schedule
        revisions = {r.deployment: r for r in self._store.current()}
        return controller_pb2.ClusterStatus(
            controller_id=self._store.controller_id,
            version=__version__,
            deployments=deployment_views(
                self._reconciler.deployments(),
                revisions,
                agents,
                schedule.plan if schedule else None,
            ),
            nodes=self._nodes(),
            agents=agents,
            models=self._models(),
            events=[
                event_view(e) for e in self._store.events(limit=request.events or RECENT_EVENTS)
            ],
            gateway_url=self._gateway_url,
            routes_generation=self._routes.generation,
            control_plane=self._control_plane(),
        )

    @unary
    async def ListEndpoints(
        self, request: controller_pb2.ListEndpointsRequest, context: Ctx
    ) -> controller_pb2.ListEndpointsResponse:
        return endpoints(self._fleet, self._gateway_url, self._routes.generation, self._adverts)

    # -- trust -----------------------------------------------------------------------

    @unary
    async def CreateCredential(
        self, request: controller_pb2.CreateCredentialRequest, context: Ctx
    ) -> controller_pb2.CreateCredentialResponse:
        self._routes.trigger()  # the routing table lists the API keys in force (debounced)
        return self._trust.create(request)

    @unary
    async def ListCredentials(
        self, request: controller_pb2.ListCredentialsRequest, context: Ctx
    ) -> controller_pb2.ListCredentialsResponse:
        return self._trust.list(request)

    @unary
    async def RevokeCredential(
        self, request: controller_pb2.RevokeCredentialRequest, context: Ctx
    ) -> controller_pb2.RevokeCredentialResponse:
        self._routes.trigger()
        return self._trust.revoke(request)

    @unary
    async def RevokeNode(
        self, request: controller_pb2.RevokeNodeRequest, context: Ctx
    ) -> controller_pb2.RevokeNodeResponse:
        return self._trust.revoke_node(request)

    @unary
    async def ListNodes(
        self, request: controller_pb2.ListNodesRequest, context: Ctx
    ) -> controller_pb2.ListNodesResponse:
        return controller_pb2.ListNodesResponse(nodes=self._nodes())

    @unary
    async def ListAgents(
        self, request: controller_pb2.ListAgentsRequest, context: Ctx
    ) -> controller_pb2.ListAgentsResponse:
        return controller_pb2.ListAgentsResponse(agents=self._agents())

    @unary
    async def ListModels(
        self, request: controller_pb2.ListModelsRequest, context: Ctx
    ) -> controller_pb2.ListModelsResponse:
        return controller_pb2.ListModelsResponse(models=self._models())

    @streaming
    async def WatchEvents(
        self, request: controller_pb2.WatchEventsRequest, context: Ctx
    ) -> AsyncIterator[controller_pb2.Event]:
        if request.after_id > MAX_EVENT_ID:
            raise ApiError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"after_id {request.after_id} is past the largest event id, {MAX_EVENT_ID}",
            )
        if not request.follow:
            rows = self._store.events(
                after_id=request.after_id,
                limit=request.limit or None,
                object=request.object or None,
            )
            for row in rows:
                yield event_view(row)
            return
        after = request.after_id
        if request.limit:
            recent = self._store.events(
                after_id=after, limit=request.limit, object=request.object or None
            )
            after = recent[0].id - 1 if recent else after
        async for row in self._events.follow(after, request.object):
            yield event_view(row)

    # -- talking to agents -----------------------------------------------------------

    @streaming
    async def Chat(
        self, request: controller_pb2.ChatRequest, context: Ctx
    ) -> AsyncIterator[node_pb2.InvokeAgentChunk]:
        deployments = self._reconciler.deployments()
        agents = {a.name for d in deployments for a in d.agents}
        if request.agent not in agents:
            known = ", ".join(sorted(agents)) or "none"
            raise ApiError(
                grpc.StatusCode.NOT_FOUND, f"no agent named `{request.agent}`; agents: {known}"
            )
        remaining = context.time_remaining()
        invoke = node_pb2.InvokeAgentRequest(
            agent=request.agent, messages=request.messages, options=request.options
        )
        async for chunk in self._router.invoke_agent(
            invoke, CHAT_TIMEOUT_S if remaining is None else remaining
        ):
            yield chunk
