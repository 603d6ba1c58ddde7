"""A controller in this process: what `start` brought up, `close` (or a failed start) stops.

No nodes: the controller serves its API and gateway on loopback ports, with
discovery and the join endpoint off.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import httpx
import pytest

from edgefleet_common.ports import free_port
from orchestrator.config import ControllerConfig
from orchestrator.controller import Controller
from orchestrator.store import StoreError


def config(tmp_path: Path, listen_port: int, gateway_port: int) -> ControllerConfig:
    return ControllerConfig(
        data_dir=tmp_path / "controller",
        listen=f"127.0.0.1:{listen_port}",
        gateway_listen=f"127.0.0.1:{gateway_port}",
        mdns=False,
        join_listen=None,
    )


def can_listen(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def test_a_start_that_fails_stops_the_gateway_and_closes_the_store(tmp_path: Path) -> None:
    gateway_port = free_port()
    with socket.create_server(("127.0.0.1", 0)) as taken:
        controller = Controller(config(tmp_path, taken.getsockname()[1], gateway_port))
        with pytest.raises(OSError, match="cannot listen on"):
            asyncio.run(controller.start())
    assert controller.gateway_port == gateway_port, "the gateway had started"
    assert can_listen(gateway_port), "the gateway no longer listens"
    assert controller.store is not None
    with pytest.raises(StoreError):
        controller.store.revisions("any")


def test_a_gateway_that_cannot_listen_leaves_nothing_running(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        controller = Controller(config(tmp_path, 0, taken.getsockname()[1]))
        with pytest.raises(OSError, match="cannot serve the gateway"):
            asyncio.run(controller.start())
    assert controller.port == 0, "the API was not started"
    assert controller.store is not None
    with pytest.raises(StoreError):
        controller.store.revisions("any")


def test_close_stops_serving_and_a_second_close_is_harmless(tmp_path: Path) -> None:
    controller = Controller(config(tmp_path, 0, free_port()))

    async def scenario() -> None:
        await controller.start()
        async with httpx.AsyncClient() as client:
            health = await client.get(f"http://127.0.0.1:{controller.gateway_port}/healthz")
            assert health.status_code == 200
            models = await client.get(f"http://127.0.0.1:{controller.gateway_port}/v1/models")
            assert models.json() == {"object": "list", "data": []}
        await controller.close()
        await controller.close()

    asyncio.run(scenario())
    assert can_listen(controller.gateway_port)
    assert can_listen(controller.port)
    assert controller.store is not None
    with pytest.raises(StoreError):
        controller.store.revisions("any")
