"""ControllerService handlers called directly, on a real store: arguments they refuse."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from edgefleet.v1 import controller_pb2
from orchestrator.api import MAX_EVENT_ID, ControllerService
from orchestrator.controller import insecure_channel
from orchestrator.events import EventLog
from orchestrator.fleet.fleet import Fleet
from orchestrator.store import SqliteStore


class Aborted(Exception):
    """What Context.abort raises, as grpc's does."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code


class Context:
    """What the handlers use of a grpc.aio.ServicerContext."""

    def __init__(self) -> None:
        self.trailers: tuple[tuple[str, str], ...] = ()

    def time_remaining(self) -> float:
        return 10.0

    def set_trailing_metadata(self, trailers: tuple[tuple[str, str], ...]) -> None:
        self.trailers = trailers

    async def abort(self, code: grpc.StatusCode, message: str) -> None:
        raise Aborted(code, message)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[ControllerService]:
    """The API over a store with three events and a fleet of no node; no reconciler or
    router is used."""
    store = SqliteStore.open(tmp_path / "controller.db")
    events = EventLog(store)
    for n in range(3):
        events.record("info", "Test", f"node/n{n}", f"event {n}")
    fleet = Fleet(
        controller_id=store.controller_id,
        channel_factory=insecure_channel,
        events=events,
        failure_timeout=lambda: 3.0,
        on_change=lambda: None,
    )
    unused: Any = None
    try:
        yield ControllerService(store, fleet, unused, events, unused)
    finally:
        store.close()


def watch(service: ControllerService, request: controller_pb2.WatchEventsRequest) -> list[str]:
    async def read() -> list[str]:
        return [e.message async for e in service.WatchEvents(request, Context())]

    return asyncio.run(read())


@pytest.mark.parametrize("after_id", [MAX_EVENT_ID + 1, 2**64 - 1])
@pytest.mark.parametrize("follow", [False, True])
def test_an_event_id_past_any_there_can_be_is_an_invalid_argument(
    service: ControllerService, after_id: int, follow: bool
) -> None:
    request = controller_pb2.WatchEventsRequest(after_id=after_id, follow=follow)
    with pytest.raises(Aborted, match="after_id") as refused:
        watch(service, request)
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_the_largest_event_id_is_after_every_event(service: ControllerService) -> None:
    assert watch(service, controller_pb2.WatchEventsRequest(after_id=MAX_EVENT_ID)) == []
    assert watch(service, controller_pb2.WatchEventsRequest(after_id=1)) == ["event 1", "event 2"]
