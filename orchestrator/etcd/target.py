"""Where the etcd cluster is: `etcd://HOST:PORT,...` plus optional TLS files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SCHEME = "etcd://"


@dataclass(frozen=True, slots=True)
class EtcdTarget:
    """The members to try in order, and the TLS files (TLS when `ca` is set)."""

    endpoints: tuple[str, ...]
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None

    def describe(self) -> str:
        """`h1:2379, h2:2379` for messages."""
        return ", ".join(self.endpoints)


def parse_store_url(
    url: str,
    *,
    ca: Path | None = None,
    cert: Path | None = None,
    key: Path | None = None,
) -> EtcdTarget:
    """`etcd://h1:2379,h2:2379,h3:2379` as an `EtcdTarget`; ValueError saying what is wrong."""
    example = "etcd://HOST:PORT[,HOST:PORT...], e.g. etcd://10.0.0.1:2379,10.0.0.2:2379"
    if not url.startswith(SCHEME):
        raise ValueError(f"store URL {url!r} is not an etcd URL: write {example}")
    rest = url.removeprefix(SCHEME).rstrip("/")
    if not rest:
        raise ValueError(f"store URL {url!r} names no etcd member: write {example}")
    if any(c in rest for c in "/?#@"):
        raise ValueError(
            f"store URL {url!r}: only HOST:PORT members are allowed (no path, query or "
            f"user): write {example}"
        )
    endpoints = tuple(_endpoint(part.strip(), url) for part in rest.split(","))
    duplicates = sorted({e for e in endpoints if endpoints.count(e) > 1})
    if duplicates:
        raise ValueError(f"store URL {url!r} names {', '.join(duplicates)} more than once")
    if (cert is None) != (key is None):
        raise ValueError("an etcd client certificate needs both --etcd-cert and --etcd-key")
    if cert is not None and ca is None:
        raise ValueError("an etcd client certificate is only sent over TLS: give --etcd-ca as well")
    return EtcdTarget(endpoints=endpoints, ca=ca, cert=cert, key=key)


def _endpoint(part: str, url: str) -> str:
    if not part:
        raise ValueError(f"store URL {url!r} has an empty member between commas")
    host, sep, port = part.rpartition(":")
    if not sep or not host:
        raise ValueError(f"store URL {url!r}: member {part!r} needs HOST:PORT (etcd uses 2379)")
    if host.startswith("[") != host.endswith("]") or (":" in host and not host.startswith("[")):
        raise ValueError(f"store URL {url!r}: write an IPv6 member as [ADDRESS]:PORT")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"store URL {url!r}: member {part!r} has no valid port (1-65535)")
    return f"{host}:{int(port)}"
