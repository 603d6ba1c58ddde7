"""Listen addresses: a free TCP port, and whether an address is loopback only."""

from __future__ import annotations

import ipaddress
import socket

GATEWAY_PORT = 7480
"""Where an OpenAI gateway listens by default, the controller's and every node's: an app
on an edge box uses `http://127.0.0.1:7480/v1`."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port on `host` nothing listens on right now (it may be taken before it is used)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def is_loopback(address: str) -> bool:
    """Whether a `HOST:PORT` listen address is on loopback only (`localhost` counts)."""
    host = address.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
