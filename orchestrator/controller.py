"""The controller: store, fleet, discovery, reconciler and APIs wired together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from edgefleet.v1 import controller_pb2_grpc
from edgefleet_common.grpc_transport import client_options, server_options
from edgefleet_common.malformed import MalformedRequests
from edgefleet_common.ports import is_loopback
from edgefleet_common.version import __version__
from edgefleet_contract.join_advert import JoinAdvertiser
from edgefleet_dataplane.escalation import Escalator
from edgefleet_dataplane.gateway import OpenAiGateway
from edgefleet_dataplane.http_server import HttpServer
from edgefleet_dataplane.router import Router
from orchestrator.api import ControllerService
from orchestrator.api_auth import AdminGuard, add_secure_api_port, write_local_admin_config
from orchestrator.config import ControllerConfig
from orchestrator.control_plane_view import control_plane_status
from orchestrator.control_role import ControlRole
from orchestrator.dashboard.calls import DashboardCalls
from orchestrator.dashboard.routes import UiListener
from orchestrator.dashboard.traffic import CountingBalancer, Traffic
from orchestrator.discovery import MdnsDiscovery
from orchestrator.events import EventLog, LeaderEvents
from orchestrator.fleet.fleet import Fleet
from orchestrator.fleet.replica_directory import FleetReplicaDirectory
from orchestrator.leadership import Leadership
from orchestrator.reconciler import Reconciler
from orchestrator.routes_publisher import RoutesPublisher
from orchestrator.routes_table import keys_in_force
from orchestrator.routing_index import CurrentRoutingIndex
from orchestrator.state_backend import StateBackend, open_backend
from orchestrator.store import StateStore
from orchestrator.trust.admin import TrustAdmin
from orchestrator.trust.cluster_trust import ClusterTrust

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_S = 3.0


def insecure_channel(node_id: str, address: str) -> Any:
    """A plain gRPC channel to a node (`--insecure`), with the keepalive that detects
    partitions."""
    return grpc.aio.insecure_channel(address, options=client_options())


class Controller:
    """One running controller."""

    def __init__(self, config: ControllerConfig) -> None:
        self.config = config
        self.port = 0
        self.store: StateStore | None = None
        self._server: Any = None
        self._health = health.aio.HealthServicer()
        self._fleet: Fleet | None = None
        self._reconciler: Reconciler | None = None
        self._routes: RoutesPublisher | None = None
        self._gateway_adverts: dict[str, str] = {}
        """The gateway URL of each node's mDNS advert (filled by discovery)."""
        self.gateway_port = 0
        self._ui: UiListener | None = None
        """The gateway listener's handler, which serves the dashboard under `/ui`."""
        self._escalator: Escalator | None = None
        self._traffic = Traffic()
        """What the gateway served, for the dashboard's charts."""
        self.trust: ClusterTrust | None = None
        """The cluster CA, tokens and keys (None with `--insecure`)."""
        self.join_port = 0
        self._leadership: Leadership | None = None
        self._role: ControlRole | None = None
        self._running = contextlib.AsyncExitStack()
        """What has started, so that `close` stops it in reverse order."""

    @property
    def fleet(self) -> Fleet:
        """The nodes (after start)."""
        assert self._fleet is not None, "the controller has not started"
        return self._fleet

    @property
    def reconciler(self) -> Reconciler:
        """The control loop (after start)."""
        assert self._reconciler is not None, "the controller has not started"
        return self._reconciler

    @property
    def address(self) -> str:
        """HOST:PORT the API listens on."""
        host = self.config.listen.rpartition(":")[0]
        return f"{host}:{self.port}"

    # -- starting ----------------------------------------------------------------------

    async def start(self) -> None:
        """Open the store, serve the API, find nodes and start reconciling. When a step
        fails, what had started is stopped again and the error raised."""
        try:
            await self._start()
        except BaseException:
            await self._running.aclose()
            raise

    async def _start(self) -> None:
        """Each step registers how to stop what it started."""
        self._check_exposure()
        backend = self._open_backend()
        store = backend.store
        events = EventLog(store)
        trust = self.trust = None if self.config.insecure else self._open_trust(store)
        observed = LeaderEvents(events, lambda: self._term() > 0)
        fleet, reconciler = self._make_fleet(store, observed, trust)
        index = CurrentRoutingIndex(reconciler.deployments)
        router = Router(FleetReplicaDirectory(fleet, lambda: reconciler.assignment), index)
        router.balancer = CountingBalancer(self._traffic)
        gateway_url = await self._serve_gateway(router, index, events)
        routes = self._routes = RoutesPublisher(
            store,
            fleet,
            assignment=lambda: reconciler.assignment,
            index=index,
            key_digests=_key_digests(trust),
        )
        self._running.push_async_callback(routes.close)
        self._running.push_async_callback(reconciler.close)
        service = ControllerService(
            store,
            fleet,
            reconciler,
            events,
            router,
            gateway_url=gateway_url,
            trust=TrustAdmin(trust, fleet, events),
            routes=routes,
            gateway_adverts=self._gateway_adverts,
            control_plane=lambda: control_plane_status(self._leadership, self._role, store),
        )
        self._mount_dashboard(service)
        await self._serve_api(service, trust)
        # Known now that the API listens: what the leader key tells the others.
        leadership = self._leadership = backend.leadership(self.address)
        role = self._role = ControlRole(
            leadership,
            store,
            fleet,
            reconciler,
            routes,
            events,
            address=self.address,
            reported_term=fleet.reported_term,
        )
        if trust is not None and self.config.join_listen:
            await self._serve_join(self.config.join_listen, trust, store, events)
        await self._health.set("", health_pb2.HealthCheckResponse.SERVING)
        self._running.push_async_callback(self._health.enter_graceful_shutdown)
        await self._find_nodes(fleet, observed)
        role.start()
        self._running.push_async_callback(role.close)
        events.record(
            "info",
            "ControllerStarted",
            "controller",
            f"controller {__version__} serving at {self.address}; data in {self.config.data_dir}"
            f"; state in {store.health().kind}",
        )

    def _check_exposure(self) -> None:
        """Warn about a controller that anyone on the network may command."""
        config = self.config
        if config.insecure:
            log.warning(
                "INSECURE: nodes are commanded in plaintext without certificates, and the "
                "gateway asks no API key; anyone on the network can command the nodes"
            )

    def _open_backend(self) -> StateBackend:
        backend = open_backend(self.config)
        self._running.callback(backend.close)
        self.store = backend.store
        return backend

    def _open_trust(self, store: StateStore) -> ClusterTrust:
        """The cluster CA and the controller's identity (made on first start)."""
        trust = ClusterTrust(
            self.config.data_dir,
            store,
            node_cert_lifetime=timedelta(seconds=self.config.node_cert_lifetime_s),
        )
        token_file = trust.ensure_token_file()
        log.info(
            "cluster CA ready",
            extra={"ca_fingerprint": trust.ca.fingerprint, "join_token_file": str(token_file)},
        )
        return trust

    def _make_fleet(
        self, store: StateStore, events: EventLog, trust: ClusterTrust | None
    ) -> tuple[Fleet, Reconciler]:
        """The fleet and the reconciler, which call each other: the fleet's callbacks run
        only once both exist."""
        fleet = self._fleet = Fleet(
            controller_id=store.controller_id,
            channel_factory=insecure_channel if trust is None else trust.node_channel,
            revoked=dict if trust is None else trust.revoked,
            events=events,
            failure_timeout=lambda: reconciler.failure_timeout_s,
            on_change=lambda: reconciler.trigger(),
            term=self._term,
        )
        self._running.push_async_callback(fleet.close)
        reconciler = self._reconciler = Reconciler(
            store, fleet, events, local_node=self.config.local_node, on_pass=self._passed
        )
        # Before the reconciler's first pass: cordons kept in the store hold from the start.
        fleet.keep_marks(store)
        return fleet, reconciler

    async def _serve_gateway(
        self, router: Router, index: CurrentRoutingIndex, events: EventLog
    ) -> str:
        """Serve the OpenAI-compatible gateway if configured; returns its base URL."""
        listen = self.config.gateway_listen
        if not listen:
            return ""
        host, _, port = listen.rpartition(":")
        # Off loopback, the gateway speaks HTTPS (a certificate from the cluster CA) and
        # admits only requests with an API key; on loopback, the box's own users are trusted.
        guard = self.trust if not is_loopback(listen) else None
        tls = guard.gateway_tls(host.strip("[]")) if guard is not None else None
        escalator = self._escalator = Escalator(events)
        self._running.push_async_callback(escalator.close)
        api_keys = guard.book.check_api_key if guard is not None else None
        # One listener: the dashboard under /ui (mounted once the API exists), the rest
        # the OpenAI gateway; the same TLS and API keys for both.
        gateway_handler = OpenAiGateway(router, index, escalator, api_keys).handle
        ui = self._ui = UiListener(gateway_handler, api_keys)
        gateway = HttpServer(ui.handle)
        try:
            self.gateway_port = await gateway.start(host.strip("[]"), int(port), tls)
        except OSError as exc:
            raise OSError(f"cannot serve the gateway on {listen}: {exc.strerror or exc}") from exc
        self._running.push_async_callback(gateway.close)
        return f"{'https' if tls else 'http'}://{host}:{self.gateway_port}/v1"

    def _mount_dashboard(self, service: ControllerService) -> None:
        """Serve the dashboard on the gateway's listener (when there is one)."""
        ui, escalator = self._ui, self._escalator
        if ui is None or escalator is None:
            return
        calls = DashboardCalls(service, self._traffic, lambda: escalator.escalated)
        ui.mount(calls)
        # Runs before the listener closes: open event streams end rather than hold it up.
        self._running.callback(calls.closing.set)

    async def _serve_api(self, service: ControllerService, trust: ClusterTrust | None) -> None:
        """Serve the controller API (and gRPC health) on the configured address: plaintext
        on loopback (the box's own users are trusted) or with `--insecure`; otherwise TLS
        that admits only admin and controller certificates from the cluster CA."""
        listen = self.config.listen
        secure = trust is not None and not is_loopback(listen)
        interceptors: list[Any] = [MalformedRequests()]
        if secure:
            assert trust is not None
            interceptors.insert(0, AdminGuard(trust))
        server = grpc.aio.server(options=server_options(), interceptors=interceptors)
        controller_pb2_grpc.add_ControllerServiceServicer_to_server(service, server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        try:
            if secure:
                assert trust is not None
                self.port = add_secure_api_port(server, listen, trust)
            else:
                self.port = server.add_insecure_port(listen)
        except RuntimeError:  # grpc's word for a port it cannot bind
            self.port = 0
        if not self.port:
            raise OSError(
                f"cannot listen on {listen}: the address is in use (is another "
                "controller running?) or not local"
            )
        await server.start()
        self._server = server
        self._running.push_async_callback(server.stop, SHUTDOWN_GRACE_S)
        if secure:
            assert trust is not None
            admin_config = write_local_admin_config(trust, self.address)
            log.info("admin configuration for this box", extra={"file": str(admin_config)})

    async def _serve_join(
        self, listen: str, trust: ClusterTrust, store: StateStore, events: EventLog
    ) -> None:
        """Serve the join endpoint, and advertise it over mDNS when discovery is on."""
        config = self.config
        join_server, self.join_port = await trust.serve_join(listen, events, self._rejoined)
        self._running.push_async_callback(join_server.stop, SHUTDOWN_GRACE_S)
        if config.mdns:
            advert = JoinAdvertiser(
                store.controller_id[:8],
                listen,
                self.join_port,
                store.cluster_name,
                config.mdns_interfaces or None,
            )
            await advert.start()
            self._running.push_async_callback(advert.close)

    async def _find_nodes(self, fleet: Fleet, events: EventLog) -> None:
        """Connect to the static nodes, and browse for others over mDNS when it is on."""
        config = self.config
        for node_id, address in sorted(config.static_nodes.items()):
            await fleet.add(node_id, address, "static")
        if config.mdns:
            discovery = MdnsDiscovery(
                fleet, events, cluster=config.cluster, interfaces=config.mdns_interfaces or None
            )
            # The same dict: endpoints list what discovery learns from now on.
            discovery.gateways = self._gateway_adverts
            discovery.start()
            self._running.push_async_callback(discovery.close)

    def _term(self) -> int:
        """The term this controller may push in (0: not leading, or not started)."""
        return self._role.term() if self._role is not None else 0

    def _passed(self) -> None:
        """After each reconcile pass: the routing table follows what the pass saw."""
        if self._routes is not None:
            self._routes.trigger()

    def _rejoined(self, node_id: str) -> None:
        fleet = self._fleet
        if fleet is not None:
            asyncio.get_running_loop().create_task(fleet.rejoined(node_id))

    # -- running and stopping --------------------------------------------------------

    async def wait(self) -> None:
        """Until the API server stops."""
        if self._server is not None:
            await self._server.wait_for_termination()

    async def close(self) -> None:
        """Stop whatever started, in reverse order: reconciling, discovery, serving, the
        fleet's links; then close the store."""
        await self._running.aclose()
        log.info("controller stopped")


def _key_digests(trust: ClusterTrust | None) -> Callable[[], Iterable[str]]:
    """The digests of the gateway API keys in force (none without trust: `--insecure`)."""
    if trust is None:
        return lambda: ()
    book = trust.book
    return lambda: keys_in_force(book.list("api-key"), time.time())
