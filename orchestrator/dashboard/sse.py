"""Events as Server-Sent Events: `id:` the event id, `data:` the event's JSON, and a
comment line when nothing was sent for a while, so proxies and browsers keep it open."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from google.protobuf.message import Message

from edgefleet_common.grpc_errors import StatusError
from orchestrator.dashboard.rpc_bridge import as_json, refusal_body

KEEPALIVE_S = 15.0
RETRY_MS = 3000
"""How long a client waits before it reconnects (it resumes after the last id it got)."""


def message(data: dict[str, Any], event_id: int | None = None, kind: str = "") -> bytes:
    """One SSE message."""
    lines = []
    if kind:
        lines.append(f"event: {kind}")
    if event_id:  # 0: an event no store took (it has no place to resume from)
        lines.append(f"id: {event_id}")
    lines.append(f"data: {json.dumps(data, separators=(',', ':'))}")
    return ("\n".join(lines) + "\n\n").encode()


async def event_stream(
    events: AsyncIterator[Message],
    closing: asyncio.Event,
    keepalive_s: float = KEEPALIVE_S,
) -> AsyncIterator[bytes]:
    """Each event of `events` (controller API `Event`s) as an SSE message, a comment every
    `keepalive_s` of silence, until `events` ends or `closing` is set. A refusal of the
    call ends the stream with an `error` message in the dashboard's error shape."""
    yield f"retry: {RETRY_MS}\n: events\n\n".encode()
    closed: asyncio.Future[Any] = asyncio.ensure_future(closing.wait())
    pending: asyncio.Future[Any] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(events))
            done, _ = await asyncio.wait(
                {pending, closed}, timeout=keepalive_s, return_when=asyncio.FIRST_COMPLETED
            )
            if closed in done:
                return
            if pending not in done:
                yield b": keepalive\n\n"
                continue
            finished, pending = pending, None
            try:
                event = finished.result()
            except StopAsyncIteration:
                return
            except StatusError as refused:
                yield message(refusal_body(refused), kind="error")
                return
            yield message(as_json(event), getattr(event, "id", None))
    finally:
        for future in (pending, closed):
            if future is not None:
                future.cancel()
                await asyncio.wait({future})  # its outcome is of no interest now
        close = getattr(events, "aclose", None)
        if close is not None:
            with contextlib.suppress(Exception):
                await close()
