"""The controller: store, fleet, discovery, reconciler and APIs wired together."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from edgefleet.v1 import controller_pb2_grpc
from edgefleet_common.grpc_transport import client_options, server_options
from edgefleet_common.ports import is_loopback
from edgefleet_common.version import __version__
from node_agent.join_mdns import JoinAdvertiser
from node_agent.malformed import MalformedRequests
from orchestrator.api import ControllerService
from orchestrator.config import ControllerConfig
from orchestrator.discovery import MdnsDiscovery
from orchestrator.events import EventLog
from orchestrator.fleet.fleet import Fleet
from orchestrator.gateway.escalation import Escalator
from orchestrator.gateway.http import HttpServer
from orchestrator.gateway.openai_api import OpenAiGateway
from orchestrator.reconciler import Reconciler
from orchestrator.routing.router import Router
from orchestrator.store import Store
from orchestrator.trust.admin import TrustAdmin
from orchestrator.trust.cluster_trust import ClusterTrust

log = logging.getLogger(__name__)

STORE_FILE = "controller.db"
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
        self.store: Store | None = None
        self._server: Any = None
        self._health = health.aio.HealthServicer()
        self._discovery: MdnsDiscovery | None = None
        self._fleet: Fleet | None = None
        self._reconciler: Reconciler | None = None
        self._gateway: HttpServer | None = None
        self._escalator: Escalator | None = None
        self.gateway_port = 0
        self.trust: ClusterTrust | None = None
        """The cluster CA, tokens and keys (None with `--insecure`)."""
        self._join_server: Any = None
        self._join_advert: JoinAdvertiser | None = None
        self.join_port = 0

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

    async def start(self) -> None:
        """Open the store, serve the API, find nodes and start reconciling."""
        config = self.config
        config.data_dir.mkdir(parents=True, exist_ok=True)
        store = self.store = Store.open(config.data_dir / STORE_FILE)
        events = EventLog(store)
        if not config.insecure and not is_loopback(config.listen):
            store.close()
            raise OSError(
                f"the controller API would listen on {config.listen}, off this machine, with "
                "no client authentication: keep it on loopback (use edgectl over SSH) or "
                "run with --insecure"
            )
        if config.insecure:
            log.warning(
                "INSECURE: nodes are commanded in plaintext without certificates, and the "
                "gateway asks no API key; anyone on the network can command the nodes"
            )
        trust = self.trust = None if config.insecure else self._open_trust(store)
        # The fleet and the reconciler call each other; the fleet's callbacks run only
        # once both exist.
        fleet = self._fleet = Fleet(
            controller_id=store.controller_id,
            channel_factory=insecure_channel if trust is None else trust.node_channel,
            revoked=dict if trust is None else trust.revoked,
            events=events,
            failure_timeout=lambda: reconciler.failure_timeout_s,
            on_change=lambda: reconciler.trigger(),
        )
        reconciler = self._reconciler = Reconciler(
            store, fleet, events, local_node=config.local_node
        )
        router = Router(fleet, lambda: reconciler.assignment, reconciler.deployments)
        gateway_url = await self._start_gateway(router, reconciler, events)
        server = grpc.aio.server(options=server_options(), interceptors=[MalformedRequests()])
        controller_pb2_grpc.add_ControllerServiceServicer_to_server(
            ControllerService(
                store,
                fleet,
                reconciler,
                events,
                router,
                gateway_url=gateway_url,
                trust=TrustAdmin(trust, fleet, events),
            ),
            server,
        )
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        self.port = server.add_insecure_port(config.listen)
        if not self.port:
            store.close()
            if self._gateway is not None:
                await self._gateway.close()
            if self._escalator is not None:
                await self._escalator.close()
            raise OSError(
                f"cannot listen on {config.listen}: the address is in use (is another "
                "controller running?) or not local"
            )
        await server.start()
        self._server = server
        if trust is not None and config.join_listen:
            self._join_server, self.join_port = await trust.serve_join(
                config.join_listen, events, self._rejoined
            )
            if config.mdns:
                self._join_advert = JoinAdvertiser(
                    store.controller_id[:8],
                    config.join_listen,
                    self.join_port,
                    store.cluster_name,
                    config.mdns_interfaces or None,
                )
                await self._join_advert.start()
        await self._health.set("", health_pb2.HealthCheckResponse.SERVING)
        for node_id, address in sorted(config.static_nodes.items()):
            await fleet.add(node_id, address, "static")
        if config.mdns:
            self._discovery = MdnsDiscovery(
                fleet, events, cluster=config.cluster, interfaces=config.mdns_interfaces or None
            )
            self._discovery.start()
        reconciler.start()
        reconciler.trigger()
        events.record(
            "info",
            "ControllerStarted",
            "controller",
            f"controller {__version__} serving at {self.address}; data in {config.data_dir}",
        )

    def _open_trust(self, store: Store) -> ClusterTrust:
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

    def _rejoined(self, node_id: str) -> None:
        fleet = self._fleet
        if fleet is not None:
            asyncio.get_running_loop().create_task(fleet.rejoined(node_id))

    async def _start_gateway(self, router: Router, reconciler: Reconciler, events: EventLog) -> str:
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
        gateway = HttpServer(
            OpenAiGateway(
                router,
                reconciler.deployments,
                escalator,
                api_keys=guard.book.check_api_key if guard is not None else None,
            ).handle
        )
        try:
            self.gateway_port = await gateway.start(host.strip("[]"), int(port), tls)
        except OSError as exc:
            await escalator.close()
            if self.store is not None:
                self.store.close()
            raise OSError(f"cannot serve the gateway on {listen}: {exc.strerror or exc}") from exc
        self._gateway = gateway
        return f"{'https' if tls else 'http'}://{host}:{self.gateway_port}/v1"

    @property
    def address(self) -> str:
        """HOST:PORT the API listens on."""
        host = self.config.listen.rpartition(":")[0]
        return f"{host}:{self.port}"

    async def wait(self) -> None:
        """Until the API server stops."""
        if self._server is not None:
            await self._server.wait_for_termination()

    async def close(self) -> None:
        """Stop discovery, reconciling and serving; close the store."""
        if self._discovery is not None:
            await self._discovery.close()
        if self._reconciler is not None:
            await self._reconciler.close()
        await self._health.enter_graceful_shutdown()
        if self._gateway is not None:
            await self._gateway.close()
        if self._escalator is not None:
            await self._escalator.close()
        if self._server is not None:
            await self._server.stop(SHUTDOWN_GRACE_S)
        if self._join_advert is not None:
            await self._join_advert.close()
        if self._join_server is not None:
            await self._join_server.stop(SHUTDOWN_GRACE_S)
        if self._fleet is not None:
            await self._fleet.close()
        if self.store is not None:
            self.store.close()
        log.info("controller stopped")
