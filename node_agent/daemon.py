"""The edge-node daemon: its parts wired together, its desired state, its life cycle."""

from __future__ import annotations

import asyncio
import functools
import importlib
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from edgefleet.v1 import common_pb2, node_pb2, node_pb2_grpc
from edgefleet_common.grpc_transport import server_options
from edgefleet_common.malformed import MalformedRequests
from edgefleet_common.version import __version__
from edgefleet_contract.desired import ItemChange, NodeDesired, compare
from edgefleet_contract.routing_table import RoutingTable
from edgefleet_contract.wire import AGENT_STATES, timestamp
from node_agent.admission import Admission
from node_agent.agents.host import AgentHost
from node_agent.blob_status import blob_statuses
from node_agent.blobs import BlobStore
from node_agent.caller_roles import RoleGuard
from node_agent.capacity import read_capacity
from node_agent.catalog import Catalog
from node_agent.changes import ChangeSignal
from node_agent.config import NodeConfig
from node_agent.errors import StaleGeneration
from node_agent.fencing import TargetFences
from node_agent.leader_terms import LeaderTerms
from node_agent.local_stub import NodeHandlers
from node_agent.metrics import NodeMetrics
from node_agent.model_capacity import CapacityReader, node_load_figures
from node_agent.model_fetch import ModelFetcher
from node_agent.model_status import model_status
from node_agent.models import ModelManager
from node_agent.node_directory import local_replica
from node_agent.node_trust import ServingCredentials, keep_renewed, pki_dir
from node_agent.routes_store import RoutesStore
from node_agent.runtime_pool import RuntimeFactory
from node_agent.runtimes.base import RUNTIME_NAMES, Runtime, StateListener
from node_agent.runtimes.registry import create_runtime
from node_agent.state_file import StateFile

# Imported where used, so an idle node started without them does not load them: the mDNS
# advert (zeroconf), the gateway (aiohttp's server) and the model proxy (aiohttp's client).
if TYPE_CHECKING:
    from edgefleet_contract.node_advert import Advertiser, NodeAdvert
    from node_agent.gateway_host import NodeGateway
    from node_agent.model_proxy import ModelProxy

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_S = 5.0
"""How long running requests may take to finish on a clean shutdown."""

AGENT_RUNNER = "node_agent.agents.runner"
"""The module that runs agents: it loads Agent Framework and the OpenAI client."""


def catalog_runtime_factory(catalog: Catalog, config: NodeConfig) -> RuntimeFactory:
    """Runtimes built with the node's defaults, overridden by the catalog's settings."""
    defaults = {"llama.cpp": {"threads": config.llama_threads, "context": config.llama_context}}

    def build(name: str, listener: StateListener) -> Runtime:
        settings = {**defaults.get(name, {}), **catalog.runtime_settings(name)}
        return create_runtime(name, listener, settings)

    return build


class Node:
    """One edge node: models, agents, admission, local state, and the APIs it serves."""

    def __init__(
        self,
        config: NodeConfig,
        runtime_factory: RuntimeFactory | None = None,
        serving: ServingCredentials | None = None,
    ) -> None:
        """`serving`: the certificate for mutual TLS; None: plaintext (`--insecure`, tests)."""
        self.config = config
        self.serving = serving
        self.changes = ChangeSignal()
        self.metrics = NodeMetrics()
        self.catalog = Catalog.load(config.catalog_file)
        factory = runtime_factory or catalog_runtime_factory(self.catalog, config)
        self.blobs = BlobStore(config.data_dir / "blobs")
        """Model blobs; each desired state's limits set the disk budget and download rate."""
        self.fetcher = ModelFetcher(self.blobs, self.catalog, serving)
        changed = self.changes.bump
        self.models = ModelManager(self.catalog, factory, self.metrics, changed, self.fetcher)
        self.admission = Admission(self.models.parallel_requests)
        self.agents = AgentHost(
            self.models, self.admission, self.metrics, config.data_dir, self.changes.bump
        )
        self.capacity = CapacityReader(self.models, self.metrics)
        self.state_file = StateFile(config.data_dir)
        self.desired = NodeDesired()
        self.fences = TargetFences()
        self.leader_terms = LeaderTerms.load(config.data_dir, self.changes.bump)
        self.routes = RoutesStore(config.data_dir, self._routes_changed)
        self.gateway: NodeGateway | None = None
        """The node's OpenAI-compatible gateway, once it serves."""
        self.enacted_generation = 0
        """The generation whose models and agents the status lists (set once enacted)."""
        self.started_at = time.time()
        self.port = 0
        self.metrics_port = 0
        self.stopping = False
        """Set when shutdown begins: status and progress streams end at once."""
        self._apply_lock = asyncio.Lock()
        self._server: grpc.aio.Server | None = None
        self._health = health.aio.HealthServicer()
        self._advertiser: Advertiser | None = None
        self._renewal: asyncio.Task[None] | None = None

    @functools.cached_property
    def proxy(self) -> ModelProxy:
        """Forwards chat-completions requests to the runtimes (made on first use)."""
        from node_agent.model_proxy import ModelProxy

        return ModelProxy(self.models, self.admission, self.metrics)

    # -- desired state ---------------------------------------------------------------

    async def apply(self, desired: NodeDesired) -> list[ItemChange]:
        """Make `desired` this node's state: saved first, then acted on in the background.

        The same generation with the same content changes nothing; an older generation,
        or the same one with other content, raises StaleGeneration.
        """
        async with self._apply_lock:
            current = self.desired
            if desired.generation < current.generation:
                raise StaleGeneration(
                    f"generation {desired.generation} is older than the {current.generation} "
                    "this node already runs"
                )
            if desired.generation == current.generation:
                if desired.content_key() != current.content_key():
                    raise StaleGeneration(
                        f"generation {desired.generation} was already applied with other "
                        "content; send a newer generation"
                    )
                return [ItemChange(c.kind, c.name, "unchanged") for c in compare(current, desired)]
            changes = compare(current, desired)
            # Saved before acting: after a crash the node restarts into what it was told.
            await asyncio.to_thread(self.state_file.save, desired)
            # Fenced before acting: a request routed with an older table is refused as soon
            # as the target it was meant for changes.
            self.fences.applied(desired, changes)
            await self._enact(desired)
            log.info(
                "desired state applied",
                extra={
                    "generation": desired.generation,
                    "models": len(desired.models),
                    "agents": len(desired.agents),
                    "changed": sum(1 for c in changes if c.action != "unchanged"),
                },
            )
            return changes

    async def _enact(self, desired: NodeDesired) -> None:
        await load_agent_runner(desired)
        self.desired = desired
        limits = desired.limits
        self.fetcher.configure(limits)
        await self.admission.configure(
            limits.max_queue_per_agent, limits.max_concurrent_agents or None
        )
        # Models the state brings join the set first, so an agent (re)started on one finds
        # it there (pending until loaded), never missing; then agents, where one that goes
        # away starts draining; then the models nobody wants leave, each once the requests
        # still running on it are done (see Retirements).
        await self.models.add(desired.models, limits)
        await self.agents.reconcile(desired.agents)
        await self.models.retire(desired.models)
        # Statuses say this generation only now: one composed meanwhile (a heartbeat)
        # must not claim it while its models and agents are not yet in the lists.
        self.enacted_generation = desired.generation
        self.changes.bump()

    async def restore(self) -> bool:
        """Bring back the last saved desired state (edge autonomy); True when there was one."""
        saved = await asyncio.to_thread(self.state_file.load)
        if saved is None:
            return False
        log.info(
            "restoring saved desired state",
            extra={"generation": saved.generation, "agents": len(saved.agents)},
        )
        async with self._apply_lock:
            self.fences.restored(saved)
            await self._enact(saved)
        return True

    def wants_blob(self, sha256: str, source: str) -> bool:
        """Whether a wanted model has this pin or source and its blob is not here (FetchBlob)."""
        return self.fetcher.wants_blob(self.desired.models, sha256, source)

    def _routes_changed(self, table: RoutingTable) -> None:
        self.changes.bump()  # statuses say which table the gateway routes with
        if self.gateway is not None:
            self.gateway.routes_changed(table)

    # -- what the node reports -------------------------------------------------------

    async def status(self, seq: int, heartbeat: bool) -> node_pb2.NodeStatus:
        """The node's whole current status."""
        in_flight, waiting, ewma = self.admission.totals()
        # Queue depths count what waits inside a runtime too: that is where the
        # balancers see work a replica has not started.
        capacities = await self.capacity.read()
        models = [
            model_status(s, self.admission.loads.get(s.want.alias), capacities.get(s.want.alias))
            for s in self.models.slots()
        ]
        agents = []
        for name in self.agents.names():
            state, reason = self.agents.state(name)
            load = self.admission.loads.get(name)
            model = capacities.get(self.agents.model_of(name))
            agents.append(
                common_pb2.AgentStatus(
                    name=name,
                    model=self.agents.model_of(name),
                    state=AGENT_STATES[state],
                    reason=reason,
                    in_flight=load.in_flight if load else 0,
                    queue_depth=(load.waiting if load else 0) + (model.queued if model else 0),
                    latency_ewma_ms=load.latency_ewma_ms if load else 0.0,
                    requests_total=load.requests_total if load else 0,
                    failures_total=load.failures_total if load else 0,
                )
            )
        memory_used = await self.models.memory_used()
        self.metrics.model_memory.set(memory_used)
        slots_total, slots_busy, runtime_queued = node_load_figures(capacities)
        return node_pb2.NodeStatus(
            node_id=self.config.node_id,
            generation=self.enacted_generation,
            seq=seq,
            sent_at=timestamp(),
            heartbeat=heartbeat,
            models=models,
            agents=agents,
            load=common_pb2.NodeLoad(
                in_flight=in_flight,
                queue_depth=waiting + runtime_queued,
                latency_ewma_ms=ewma,
                memory_used_bytes=memory_used,
                slots_total=slots_total,
                slots_busy=slots_busy,
                runtime_queue_depth=runtime_queued,
            ),
            capacity=_capacity_proto(),
            heartbeat_interval_s=self.config.heartbeat_interval_s,
            routes_generation=self.routes.generation,
            leader_term=self.leader_terms.term,
            refused_pushes=self.leader_terms.refused,
            blobs=blob_statuses(self.blobs),
        )

    async def info(self) -> node_pb2.NodeInfo:
        """Who this node is and what it can do."""
        runtimes = []
        started = self.models.started_runtimes()
        for name in RUNTIME_NAMES:
            runtime = started.get(name)
            if runtime is None:
                runtimes.append(node_pb2.RuntimeInfo(name=name, available=False, detail="idle"))
                continue
            health_ = await runtime.health()
            runtimes.append(
                node_pb2.RuntimeInfo(name=name, available=health_.available, detail=health_.detail)
            )
        return node_pb2.NodeInfo(
            node_id=self.config.node_id,
            version=__version__,
            cluster=self.config.cluster,
            capacity=_capacity_proto(),
            runtimes=runtimes,
            cached_models=sorted(self.catalog.aliases()),
            generation=self.enacted_generation,
            started_at=timestamp(self.started_at),
            controller_id=self.desired.controller_id,
            labels=dict(self.config.labels),
            gateway_url=self.gateway.url if self.gateway is not None else "",
            leader_term=self.leader_terms.term,
        )

    # -- life cycle ------------------------------------------------------------------

    async def start(self, servicer_factory: Callable[[Node], NodeHandlers]) -> None:
        """Restore the saved state and routing table, then serve the node API, the
        gateway, metrics and the mDNS advert."""
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        await self.restore()
        await self.routes.restore()
        interceptors: list[object] = [MalformedRequests()]
        if self.serving is not None:
            interceptors.insert(0, RoleGuard())
        server = grpc.aio.server(options=server_options(), interceptors=interceptors)
        service = servicer_factory(self)
        node_pb2_grpc.add_NodeServiceServicer_to_server(service, server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        address = f"{self.config.listen_host}:{self.config.listen_port}"
        if self.serving is None:
            self.port = server.add_insecure_port(address)
        else:
            self.port = server.add_secure_port(address, self.serving.server_credentials())
        if not self.port:
            raise OSError(f"cannot listen on {address}: the address is in use or not local")
        await server.start()
        self._server = server
        if self.serving is not None and self.serving.joined:
            self._renewal = asyncio.create_task(
                keep_renewed(self.config.node_id, self.config.data_dir, self.serving),
                name="certificate renewal",
            )
        await self._health.set("", health_pb2.HealthCheckResponse.SERVING)
        await self._health.set("edgefleet.v1.NodeService", health_pb2.HealthCheckResponse.SERVING)
        if self.config.metrics_port is not None:
            try:
                self.metrics_port = self.metrics.serve(
                    self.config.metrics_host, self.config.metrics_port
                )
            except OSError as exc:  # metrics must never keep a node from serving
                log.error(
                    "cannot serve metrics",
                    extra={"port": self.config.metrics_port, "error": str(exc)},
                )
        await self._serve_gateway(service)
        if self.config.advertise:
            from edgefleet_contract.node_advert import Advertiser

            self._advertiser = Advertiser(self._advert(), self.config.mdns_interfaces or None)
            await self._advertiser.start()
        log.info(
            "edge-node serving",
            extra={
                "node": self.config.node_id,
                "address": f"{self.config.listen_host}:{self.port}",
                "metrics_port": self.metrics_port or None,
                "gateway": self.gateway.url if self.gateway is not None else None,
                "data_dir": str(self.config.data_dir),
                "generation": self.desired.generation,
                "routes_generation": self.routes.generation,
            },
        )

    async def _serve_gateway(self, service: NodeHandlers) -> None:
        """Serve the node's gateway if configured (see NodeGateway.start)."""
        config = self.config
        if config.gateway_host is None:
            return
        from edgefleet_contract.node_advert import local_addresses
        from node_agent.gateway_host import NodeGateway

        gateway = NodeGateway(
            config.node_id,
            config.gateway_host,
            lambda: self.routes.table,
            lambda: self.desired,
            functools.partial(local_replica, self),
            service,
            self.serving,
        )
        advertised = local_addresses(config.mdns_interfaces or None)[0]
        pki = pki_dir(config.data_dir)
        if await gateway.start(config.gateway_port, advertised, pki):
            self.gateway = gateway
        else:
            await gateway.close()

    def _advert(self) -> NodeAdvert:
        from edgefleet_contract.node_advert import NodeAdvert, local_addresses

        interfaces = self.config.mdns_interfaces or None
        # Only a gateway other boxes can reach is worth telling the LAN about.
        gateway = self.gateway if self.gateway is not None and self.gateway.exposed else None
        return NodeAdvert(
            node_id=self.config.node_id,
            version=__version__,
            port=self.port,
            cluster=self.config.cluster,
            addresses=local_addresses(interfaces),
            gateway_port=gateway.port if gateway is not None else 0,
            gateway_scheme=gateway.scheme if gateway is not None else "",
        )

    async def wait(self) -> None:
        """Until the gRPC server stops."""
        if self._server is not None:
            await self._server.wait_for_termination()

    async def close(self) -> None:
        """End status streams, say goodbye on mDNS, finish running requests, stop agents,
        unload models."""
        self.stopping = True
        self.changes.bump()  # wakes the status streams, which see `stopping` and end
        if self._renewal is not None:
            self._renewal.cancel()
        steps: list[tuple[str, Callable[[], Awaitable[object]]]] = []
        if self._advertiser is not None:
            steps.append(("mdns goodbye", self._advertiser.close))
        steps.append(("health", self._health.enter_graceful_shutdown))
        if self.gateway is not None:
            steps.append(("gateway", self.gateway.close))
        if self._server is not None:
            server = self._server
            steps.append(("grpc", lambda: server.stop(SHUTDOWN_GRACE_S)))
        steps.append(("agents", self.agents.close))
        if "proxy" in self.__dict__:  # made on first use: nothing to close otherwise
            steps.append(("proxy", self.proxy.close))
        steps.append(("models", self.models.close))
        steps.append(("downloads", self.fetcher.close))
        for name, step in steps:
            try:
                await step()
            except Exception:
                log.exception("shutdown step failed", extra={"step": name})
        self.metrics.close()
        log.info("edge-node stopped", extra={"node": self.config.node_id})


async def load_agent_runner(desired: NodeDesired) -> None:
    """Import Agent Framework (and the OpenAI client and aiohttp under it) once a desired
    state names an agent: a node without agents never loads them, and the first agent
    request does not spend its deadline on half a second of imports. In a worker thread,
    so the node keeps answering meanwhile."""
    if desired.agents and AGENT_RUNNER not in sys.modules:
        await asyncio.to_thread(importlib.import_module, AGENT_RUNNER)


def _capacity_proto() -> common_pb2.Capacity:
    capacity = read_capacity()
    return common_pb2.Capacity(
        cpu_count=capacity.cpu_count,
        memory_total_bytes=capacity.memory_total_bytes,
        memory_available_bytes=capacity.memory_available_bytes,
        accelerators=list(capacity.accelerators),
    )
