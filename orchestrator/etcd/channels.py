"""One gRPC channel per etcd member, and which member to try first."""

from __future__ import annotations

import threading

import grpc

from orchestrator.etcd.errors import EtcdError, EtcdUnavailable
from orchestrator.etcd.target import EtcdTarget

# etcd restarts and elections last seconds: reconnect quickly instead of gRPC's
# default backoff (up to two minutes). Keepalive pings notice a silent member; etcd
# refuses pings more often than every 5 s.
CHANNEL_OPTIONS: list[tuple[str, int]] = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
]


class Channels:
    """Lazily opened channels to each endpoint; the last one that answered goes first."""

    def __init__(self, target: EtcdTarget) -> None:
        self.target = target
        self._lock = threading.Lock()
        self._channels: dict[str, grpc.Channel] = {}
        self._preferred = 0
        self._closed = False
        self._credentials = _credentials(target)

    def order(self) -> list[str]:
        """Every endpoint, the preferred one first."""
        with self._lock:
            first = self._preferred
        endpoints = self.target.endpoints
        return [endpoints[(first + i) % len(endpoints)] for i in range(len(endpoints))]

    def prefer(self, endpoint: str) -> None:
        """Try `endpoint` first from now on (it answered)."""
        with self._lock:
            self._preferred = self.target.endpoints.index(endpoint)

    def channel(self, endpoint: str) -> grpc.Channel:
        """The channel to `endpoint`, opened on first use."""
        with self._lock:
            if self._closed:
                raise EtcdUnavailable("the etcd client is closed")
            channel = self._channels.get(endpoint)
            if channel is None:
                if self._credentials is None:
                    channel = grpc.insecure_channel(endpoint, options=CHANNEL_OPTIONS)
                else:
                    channel = grpc.secure_channel(
                        endpoint, self._credentials, options=CHANNEL_OPTIONS
                    )
                self._channels[endpoint] = channel
            return channel

    def close(self) -> None:
        """Close every channel; later calls raise EtcdUnavailable."""
        with self._lock:
            self._closed = True
            channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            channel.close()


def _credentials(target: EtcdTarget) -> grpc.ChannelCredentials | None:
    if target.ca is None:
        return None
    try:
        ca = target.ca.read_bytes()
        cert = target.cert.read_bytes() if target.cert else None
        key = target.key.read_bytes() if target.key else None
    except OSError as error:
        raise EtcdError(
            f"cannot read the etcd TLS file {error.filename}: {error.strerror} "
            "(check --etcd-ca, --etcd-cert and --etcd-key)"
        ) from error
    return grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=cert
    )


UNREACHABLE = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}
)
"""Codes that mean "this member could not serve it now": try the next one."""


TIMED_OUT_WORDS = ("context deadline exceeded", "request timed out", "leader changed")
"""How a member that cannot reach a quorum says so when it answers UNKNOWN (etcd 3.4 lets
its own deadline through with that code): the cluster, not the request, is the problem."""


def unreachable(error: grpc.RpcError) -> bool:
    """Whether a failed call should be tried on another member."""
    if error.code() in UNREACHABLE:
        return True
    details = (error.details() or "").lower()
    return error.code() == grpc.StatusCode.UNKNOWN and any(w in details for w in TIMED_OUT_WORDS)


def failure_detail(error: grpc.RpcError) -> str:
    """etcd's own words for a failed call (`etcdserver: no leader`, ...)."""
    code = error.code()
    details = error.details() or ""
    return f"{details} ({code.name.lower()})" if details else code.name.lower()
