"""gRPC channel and server settings shared by the controller and the nodes.

Failure detection depends on these. A partitioned peer loses packets silently,
so an open stream never errors by itself: the client pings every second and
gives up after one more, which fails calls and streams about 1.5 s after a cut.
The server must accept pings that often; on default settings it answers them
with GOAWAY "too_many_pings".
"""

from __future__ import annotations

MAX_MESSAGE_BYTES = 8 * 1024 * 1024
"""Largest message either side accepts; larger ones fail with RESOURCE_EXHAUSTED."""

KEEPALIVE_TIME_MS = 1000
KEEPALIVE_TIMEOUT_MS = 1000

GrpcOptions = list[tuple[str, int | str]]


def client_options(keepalive_ms: int = KEEPALIVE_TIME_MS) -> GrpcOptions:
    """Channel options: frequent keepalive pings, even on idle connections."""
    return [
        ("grpc.keepalive_time_ms", keepalive_ms),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        # Reconnect quickly after a peer comes back; the default backoff grows to 2 min.
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.min_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 2000),
        ("grpc.enable_retries", 0),
    ]


def server_options() -> GrpcOptions:
    """Server options that allow clients' one-second keepalive pings."""
    return [
        ("grpc.http2.min_recv_ping_interval_without_data_ms", 500),
        ("grpc.http2.max_ping_strikes", 0),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.keepalive_time_ms", 10_000),
        ("grpc.keepalive_timeout_ms", 5_000),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.so_reuseport", 0),
    ]
