"""Events as Server-Sent Events: framing, keep-alive comments, the end of a stream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import grpc

from edgefleet.v1 import controller_pb2
from edgefleet_common.grpc_errors import StatusError
from orchestrator.dashboard.sse import event_stream, message


def test_a_message_carries_its_id_and_one_line_of_json() -> None:
    sent = message({"id": "7", "message": "two\nlines"}, 7)
    assert sent == b'id: 7\ndata: {"id":"7","message":"two\\nlines"}\n\n'
    assert message({"a": 1}) == b'data: {"a":1}\n\n'  # an event no store took: no id
    assert message({"a": 1}, kind="error").startswith(b"event: error\n")


async def _events(
    sent: list[controller_pb2.Event], gate: asyncio.Event, closed: list[bool]
) -> AsyncIterator[controller_pb2.Event]:
    try:
        for event in sent:
            yield event
        await gate.wait()
        raise StatusError(grpc.StatusCode.UNAVAILABLE, "the store is read-only")
    finally:
        closed.append(True)


def test_events_then_keepalives_while_quiet_then_the_error_that_ends_it() -> None:
    async def run() -> tuple[list[bytes], list[bool]]:
        gate, closing, closed = asyncio.Event(), asyncio.Event(), []
        events = [controller_pb2.Event(id=1, reason="NodeReady", object="node/edge-1")]
        stream = event_stream(_events(events, gate, closed), closing, keepalive_s=0.01)
        pieces = []
        async for piece in stream:
            pieces.append(piece)
            if piece == b": keepalive\n\n":
                gate.set()
        return pieces, closed

    pieces, closed = asyncio.run(run())
    assert pieces[0].startswith(b"retry: ")
    first = pieces[1].decode()
    assert first.startswith("id: 1\ndata: ")
    event = json.loads(first.split("data: ", 1)[1])
    assert (event["reason"], event["object"], event["node_id"]) == ("NodeReady", "node/edge-1", "")
    assert b": keepalive\n\n" in pieces
    error = pieces[-1].decode()
    assert error.startswith("event: error\ndata: ")
    assert json.loads(error.split("data: ", 1)[1]) == {
        "error": {"message": "the store is read-only", "type": "unavailable"}
    }
    assert closed == [True]


def test_a_closing_controller_ends_the_stream_and_its_source() -> None:
    async def run() -> tuple[list[bytes], list[bool]]:
        gate, closing, closed = asyncio.Event(), asyncio.Event(), []
        stream = event_stream(_events([], gate, closed), closing, keepalive_s=60)
        pieces = [await anext(stream)]
        closing.set()
        pieces += [piece async for piece in stream]
        return pieces, closed

    pieces, closed = asyncio.run(run())
    assert len(pieces) == 1  # the opening lines only
    assert closed == [True]
