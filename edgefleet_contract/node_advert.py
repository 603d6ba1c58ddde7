"""Nodes on the LAN over mDNS / DNS-SD: advertising one, and browsing for all.

Service type `_edgefleet._tcp.local.`; the TXT record carries the node id, the
software version, the API port, the cluster name and, when the node's gateway
listens beyond loopback, its scheme and port (`gateway=https:7480`); never a
secret. mDNS is
unauthenticated, so what it finds is only a proposal: the controller confirms a
node by calling it. A crash is not seen here in useful time (PTR TTLs are long);
failure detection belongs to the status stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import ifaddr
from zeroconf import DNSQuestionType, InterfaceChoice, IPVersion, ServiceInfo, ServiceStateChange
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

SERVICE_TYPE = "_edgefleet._tcp.local."
TXT_ID = "id"
TXT_VERSION = "version"
TXT_PORT = "api_port"
TXT_CLUSTER = "cluster"
TXT_GATEWAY = "gateway"
"""`SCHEME:PORT` of the node's OpenAI-compatible gateway (absent: none on the network)."""
GATEWAY_SCHEMES = ("http", "https")

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class NodeAdvert:
    """What a node says about itself over mDNS."""

    node_id: str
    version: str
    port: int
    cluster: str
    addresses: tuple[str, ...]
    gateway_port: int = 0
    """The node's gateway, when other boxes can reach it; 0: none."""
    gateway_scheme: str = ""
    """`http` or `https` (with `gateway_port`)."""

    def txt(self) -> dict[str, str]:
        """The TXT record properties."""
        properties = {
            TXT_ID: self.node_id,
            TXT_VERSION: self.version,
            TXT_PORT: str(self.port),
            TXT_CLUSTER: self.cluster,
        }
        if self.gateway_port:
            properties[TXT_GATEWAY] = f"{self.gateway_scheme}:{self.gateway_port}"
        return properties


SeenCallback = Callable[[NodeAdvert], None]
GoneCallback = Callable[[str], None]


def open_zeroconf(interfaces: Sequence[str] | None) -> AsyncZeroconf:
    """A zeroconf instance on the given interface addresses (None: every interface).

    Tests in the root namespace pass ["127.0.0.1"] so nothing is multicast on a real
    network interface.
    """
    if not interfaces:
        return AsyncZeroconf(interfaces=InterfaceChoice.All, ip_version=IPVersion.V4Only)
    v6 = any(ipaddress.ip_address(a).version == 6 for a in interfaces)
    v4 = any(ipaddress.ip_address(a).version == 4 for a in interfaces)
    version = IPVersion.All if v4 and v6 else IPVersion.V6Only if v6 else IPVersion.V4Only
    return AsyncZeroconf(interfaces=list(interfaces), ip_version=version)


def local_addresses(interfaces: Sequence[str] | None) -> tuple[str, ...]:
    """Addresses to publish: the chosen interface addresses, or every non-loopback IPv4."""
    if interfaces:
        return tuple(interfaces)
    found = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str) and not ip.ip.startswith("127."):
                found.append(ip.ip)
    return tuple(found) or ("127.0.0.1",)


def _service_info(advert: NodeAdvert) -> ServiceInfo:
    name = f"{advert.node_id}.{SERVICE_TYPE}"
    return ServiceInfo(
        SERVICE_TYPE,
        name,
        port=advert.port,
        properties=advert.txt(),
        server=f"edgefleet-{advert.node_id}.local.",
        addresses=[socket.inet_aton(a) for a in advert.addresses if ":" not in a],
    )


class Advertiser:
    """Keeps one node's advertisement published; sends a goodbye on close."""

    def __init__(self, advert: NodeAdvert, interfaces: Sequence[str] | None) -> None:
        self.advert = advert
        self._interfaces = interfaces
        self._zeroconf: AsyncZeroconf | None = None
        self._info: ServiceInfo | None = None

    async def start(self) -> None:
        """Register the service (probing takes about a second on a quiet network)."""
        self._zeroconf = open_zeroconf(self._interfaces)
        self._info = _service_info(self.advert)
        await self._zeroconf.async_register_service(self._info)
        log.info("advertising over mDNS", extra={"service": self._info.name})

    async def update(self, advert: NodeAdvert) -> None:
        """Publish changed id, version, port or cluster."""
        if self._zeroconf is None or advert == self.advert:
            self.advert = advert
            return
        self.advert = advert
        new_info = _service_info(advert)
        if self._info is not None and new_info.name != self._info.name:
            await self._zeroconf.async_unregister_service(self._info)
            await self._zeroconf.async_register_service(new_info)
        else:
            await self._zeroconf.async_update_service(new_info)
        self._info = new_info

    async def close(self) -> None:
        """Send the goodbye and stop answering."""
        if self._zeroconf is None:
            return
        zeroconf, self._zeroconf = self._zeroconf, None
        with contextlib.suppress(Exception):
            if self._info is not None:
                # The outer await only schedules the goodbyes; the inner one sends
                # them. Closing before that would silence them for good.
                goodbyes = await zeroconf.async_unregister_service(self._info)
                await goodbyes
        await zeroconf.async_close()


def _parse(info: AsyncServiceInfo) -> NodeAdvert | None:
    props = {
        k.decode(errors="replace"): (v or b"").decode(errors="replace")
        for k, v in (info.properties or {}).items()
    }
    try:
        port = int(props.get(TXT_PORT) or info.port or 0)
    except ValueError:
        return None
    node_id = props.get(TXT_ID, "")
    if not node_id or not 0 < port < 65536:
        return None
    gateway_scheme, gateway_port = parse_gateway(props.get(TXT_GATEWAY, ""))
    return NodeAdvert(
        node_id=node_id,
        version=props.get(TXT_VERSION, ""),
        port=port,
        cluster=props.get(TXT_CLUSTER, ""),
        addresses=tuple(info.parsed_addresses(IPVersion.V4Only)),
        gateway_port=gateway_port,
        gateway_scheme=gateway_scheme,
    )


def parse_gateway(text: str) -> tuple[str, int]:
    """(scheme, port) of a `gateway` TXT value; ("", 0) when absent or malformed (a bad
    value only loses the gateway, never the node)."""
    scheme, _, port = text.partition(":")
    if scheme not in GATEWAY_SCHEMES or not (port.isascii() and port.isdigit()):
        return "", 0
    if len(port) > 5 or not 0 < int(port) < 65536:
        return "", 0
    return scheme, int(port)


class Browser:
    """Follows `_edgefleet._tcp` advertisements; calls back on each node seen or gone."""

    def __init__(
        self,
        zeroconf: AsyncZeroconf,
        on_seen: SeenCallback,
        on_gone: GoneCallback | None = None,
    ) -> None:
        self._zeroconf = zeroconf
        self._on_seen = on_seen
        self._on_gone = on_gone
        self._browser: AsyncServiceBrowser | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        """Begin browsing (QM questions, so a late browser is answered at once)."""
        self._browser = AsyncServiceBrowser(
            self._zeroconf.zeroconf,
            [SERVICE_TYPE],
            handlers=[self._changed],
            question_type=DNSQuestionType.QM,
        )

    def _changed(
        self, zeroconf: object, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        if state_change is ServiceStateChange.Removed:
            if self._on_gone is not None:
                self._on_gone(name.removesuffix("." + SERVICE_TYPE))
            return
        task = asyncio.get_running_loop().create_task(self._resolve(service_type, name))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _resolve(self, service_type: str, name: str) -> None:
        info = AsyncServiceInfo(service_type, name)
        # QM: a unicast (QU) answer to port 5353 reaches only one of the sockets that
        # share that port on a host, maybe another process's.
        if not await info.async_request(
            self._zeroconf.zeroconf, 3000, question_type=DNSQuestionType.QM
        ):
            log.debug("mDNS service did not resolve", extra={"service": name})
            return
        advert = _parse(info)
        if advert is not None:
            self._on_seen(advert)

    async def close(self) -> None:
        """Stop browsing."""
        if self._browser is not None:
            await self._browser.async_cancel()
            self._browser = None
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def discover(interfaces: Sequence[str] | None, seconds: float) -> list[NodeAdvert]:
    """Every node advertising within `seconds`, by node id."""
    found: dict[str, NodeAdvert] = {}
    zeroconf = open_zeroconf(interfaces)
    browser = Browser(zeroconf, lambda advert: found.__setitem__(advert.node_id, advert))
    try:
        browser.start()
        await asyncio.sleep(seconds)
    finally:
        await browser.close()
        await zeroconf.async_close()
    return sorted(found.values(), key=lambda a: a.node_id)
