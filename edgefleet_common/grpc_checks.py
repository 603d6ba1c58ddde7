"""A check that runs before a gRPC method's own behaviour: the one way the servers'
interceptors (malformed requests, the node's controller-only rule) wrap a handler."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

Handler = Any
"""grpc.RpcMethodHandler (grpcio ships no type information)."""
Check = Callable[[Any, Any], Awaitable[None]]
"""(request, context) → None; it refuses the call by aborting the context."""


def checked(handler: Handler, check: Check) -> Handler | None:
    """`handler` with `check` awaited before its behaviour; None for a handler that
    streams its requests (none of our methods do; such a shape is not wrapped)."""
    if handler.unary_unary is not None:
        unary = handler.unary_unary

        async def unary_unary(request: Any, context: Any) -> Any:
            await check(request, context)
            return await unary(request, context)

        return handler._replace(unary_unary=unary_unary)
    if handler.unary_stream is not None:
        stream = handler.unary_stream

        async def unary_stream(request: Any, context: Any) -> AsyncIterator[Any]:
            await check(request, context)
            result = stream(request, context)
            if hasattr(result, "__aiter__"):  # an async generator
                async for item in result:
                    yield item
            else:  # a coroutine that writes with context.write
                await result

        return handler._replace(unary_stream=unary_stream)
    return None
