"""Status messages: every client can receive them, however much of a request they quote."""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from collections.abc import Awaitable

import grpc
import pytest

from edgefleet_common.grpc_errors import MAX_MESSAGE_BYTES, ErrorMapping, StatusError, bounded


def travelling(message: str) -> int:
    """Bytes of the message as a grpc-message trailer (percent-encoded UTF-8)."""
    return len(urllib.parse.quote(message.encode(), safe=" !\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~"))


@pytest.mark.parametrize("message", ["", "agent `x` is not on this node", "é" * 100, "a" * 4096])
def test_a_message_that_fits_is_sent_as_it_is(message: str) -> None:
    assert bounded(message) == message


@pytest.mark.parametrize("unit", ["x", "%", "é", "🤖", "\x00"])
def test_a_message_too_large_for_a_trailer_is_cut_and_says_so(unit: str) -> None:
    message = f"agent `{unit * 3_000_000}` is not on this node"
    cut = bounded(message)
    assert cut.startswith("agent `")
    assert cut.endswith("more characters]")
    assert travelling(cut) <= MAX_MESSAGE_BYTES + 64


class Context:
    def __init__(self) -> None:
        self.aborted: tuple[grpc.StatusCode, str] | None = None

    async def abort(self, code: grpc.StatusCode, message: str) -> None:
        self.aborted = code, message
        raise grpc.aio.AbortError()


async def call(answer: Awaitable[str]) -> str:
    return await answer


def test_the_mapping_cuts_what_it_sends() -> None:
    errors = ErrorMapping(
        lambda e: (e.code, str(e)) if isinstance(e, StatusError) else None,
        "in a test",
        logging.getLogger("test"),
    )

    @errors.unary
    async def handler(service: object, request: str, context: Context) -> str:
        raise StatusError(grpc.StatusCode.NOT_FOUND, f"no agent named `{request}`")

    context = Context()
    with pytest.raises(grpc.aio.AbortError):
        asyncio.run(call(handler(None, "x" * 10_000_000, context)))
    assert context.aborted is not None
    code, message = context.aborted
    assert code == grpc.StatusCode.NOT_FOUND
    assert message.startswith("no agent named `xxx")
    assert len(message) < MAX_MESSAGE_BYTES + 64
