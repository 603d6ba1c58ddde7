"""Finding nodes: mDNS (DNS-SD) advertisements and static addresses.

Discovery only proposes: a node joins the fleet's view once its link has called
its info RPC and the id it answers with matches. mDNS says nothing about
health; a goodbye is recorded as a hint and the status stream decides.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from edgefleet_contract.node_advert import Browser, NodeAdvert, open_zeroconf
from orchestrator.events import EventLog
from orchestrator.fleet.fleet import Fleet

log = logging.getLogger(__name__)


def node_address(host: str, port: int) -> str:
    """`HOST:PORT`, bracketing IPv6 hosts."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class MdnsDiscovery:
    """Browses `_edgefleet._tcp.local.` and adds the nodes of this cluster to the fleet."""

    def __init__(
        self,
        fleet: Fleet,
        events: EventLog,
        *,
        cluster: str,
        interfaces: Sequence[str] | None,
    ) -> None:
        self._fleet = fleet
        self._events = events
        self._cluster = cluster
        self._interfaces = interfaces
        self._zeroconf = open_zeroconf(interfaces)
        self._browser = Browser(self._zeroconf, self._seen, self._gone)
        self._tasks: set[asyncio.Task[object]] = set()
        self.gateways: dict[str, str] = {}
        """The gateway base URL each node of this cluster advertises, by node id."""

    def start(self) -> None:
        """Begin browsing."""
        self._browser.start()
        log.info(
            "browsing for nodes over mDNS",
            extra={"cluster": self._cluster, "interfaces": ",".join(self._interfaces or ["all"])},
        )

    def _seen(self, advert: NodeAdvert) -> None:
        if advert.cluster != self._cluster:
            log.debug(
                "ignoring a node of another cluster",
                extra={"node": advert.node_id, "cluster": advert.cluster},
            )
            return
        if not advert.addresses:
            return
        address = node_address(advert.addresses[0], advert.port)
        if advert.gateway_port:
            where = node_address(advert.addresses[0], advert.gateway_port)
            self.gateways[advert.node_id] = f"{advert.gateway_scheme}://{where}/v1"
        else:
            self.gateways.pop(advert.node_id, None)
        # Called on the event loop by the browser; connecting happens in a task.
        task = asyncio.get_running_loop().create_task(
            self._fleet.add(advert.node_id, address, "mdns")
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _gone(self, node_id: str) -> None:
        if self._fleet.get(node_id) is not None:
            self._events.record(
                "info",
                "NodeGoodbye",
                f"node/{node_id}",
                f"{node_id} said goodbye on mDNS (a hint; its status stream decides)",
                node_id=node_id,
            )

    async def close(self) -> None:
        """Stop browsing."""
        await self._browser.close()
        await self._zeroconf.async_close()
