"""Finding the controller's join endpoint over mDNS (`_edgefleet-join._tcp.local.`).

The controller advertises where nodes join (TXT: `cluster`; never a secret). What
is found is only a candidate: a node joins the first one whose certificate has the
fingerprint its token names, so a rogue advert gets nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Sequence
from dataclasses import dataclass

from zeroconf import DNSQuestionType, IPVersion, ServiceInfo, ServiceStateChange
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo

from edgefleet_contract.node_advert import local_addresses, open_zeroconf

JOIN_SERVICE_TYPE = "_edgefleet-join._tcp.local."
TXT_CLUSTER = "cluster"

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class JoinEndpoint:
    """A join endpoint seen over mDNS."""

    address: str
    """HOST:PORT."""
    cluster: str


class JoinAdvertiser:
    """Keeps the controller's join endpoint published; sends a goodbye on close."""

    def __init__(
        self, name: str, listen: str, port: int, cluster: str, interfaces: Sequence[str] | None
    ) -> None:
        """`listen` is the join endpoint's HOST:PORT as configured: a wildcard host is
        published as the addresses of the mDNS interfaces."""
        host = listen.rpartition(":")[0].strip("[]")
        addresses = local_addresses(interfaces) if host in ("", "0.0.0.0", "::") else (host,)
        self._zeroconf = open_zeroconf(interfaces)
        self._info = ServiceInfo(
            JOIN_SERVICE_TYPE,
            f"{name}.{JOIN_SERVICE_TYPE}",
            port=port,
            properties={TXT_CLUSTER: cluster},
            server=f"edgefleet-join-{name}.local.",
            addresses=[socket.inet_aton(a) for a in addresses if ":" not in a],
        )

    async def start(self) -> None:
        """Register the service."""
        await self._zeroconf.async_register_service(self._info)
        log.info("advertising the join endpoint over mDNS", extra={"service": self._info.name})

    async def close(self) -> None:
        """Say goodbye and stop answering."""
        with contextlib.suppress(Exception):
            goodbyes = await self._zeroconf.async_unregister_service(self._info)
            await goodbyes
        await self._zeroconf.async_close()


async def find_join_endpoints(
    interfaces: Sequence[str] | None, seconds: float
) -> list[JoinEndpoint]:
    """Every join endpoint advertised within `seconds`."""
    found: dict[str, JoinEndpoint] = {}
    zeroconf = open_zeroconf(interfaces)
    tasks: set[asyncio.Task[None]] = set()

    async def resolve(name: str) -> None:
        info = AsyncServiceInfo(JOIN_SERVICE_TYPE, name)
        if not await info.async_request(zeroconf.zeroconf, 3000, question_type=DNSQuestionType.QM):
            return
        cluster = (info.properties or {}).get(TXT_CLUSTER.encode()) or b""
        for address in info.parsed_addresses(IPVersion.V4Only):
            endpoint = JoinEndpoint(f"{address}:{info.port}", cluster.decode(errors="replace"))
            found[endpoint.address] = endpoint

    def changed(
        zeroconf: object, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        if state_change is not ServiceStateChange.Removed:
            task = asyncio.get_running_loop().create_task(resolve(name))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    browser = AsyncServiceBrowser(
        zeroconf.zeroconf,
        [JOIN_SERVICE_TYPE],
        handlers=[changed],
        question_type=DNSQuestionType.QM,
    )
    try:
        await asyncio.sleep(seconds)
    finally:
        await browser.async_cancel()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await zeroconf.async_close()
    return sorted(found.values(), key=lambda e: e.address)


def discover_join_endpoints(
    interfaces: Sequence[str] | None, seconds: float = 3.0
) -> list[JoinEndpoint]:
    """`find_join_endpoints`, for code that is not in an event loop."""
    return asyncio.run(find_join_endpoints(interfaces, seconds))
