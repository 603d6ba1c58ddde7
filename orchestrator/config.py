"""How a controller is started: addresses, data folder, discovery, the local node."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from edgefleet_common.cluster import DEFAULT_CLUSTER
from edgefleet_common.paths import state_dir
from edgefleet_common.pki import DEFAULT_JOIN_PORT
from edgefleet_common.ports import GATEWAY_PORT
from orchestrator.manifest import LOCAL_NODE

DEFAULT_CONTROLLER_ADDRESS = "127.0.0.1:7440"
DEFAULT_GATEWAY_ADDRESS = f"127.0.0.1:{GATEWAY_PORT}"
DEFAULT_JOIN_ADDRESS = f"0.0.0.0:{DEFAULT_JOIN_PORT}"
CONTROLLER_ENV = "EDGEFLEET_CONTROLLER"
DEFAULT_LEASE_TTL_S = 3


@dataclass(frozen=True, slots=True)
class ControllerConfig:
    """Everything a controller needs to start."""

    data_dir: Path = field(default_factory=lambda: state_dir() / "controller")
    listen: str = DEFAULT_CONTROLLER_ADDRESS
    gateway_listen: str | None = DEFAULT_GATEWAY_ADDRESS
    """None: no gateway."""
    local_node: str = LOCAL_NODE
    """The node single-device deployments run on (the one on this box)."""
    static_nodes: Mapping[str, str] = field(default_factory=dict)
    """Node id → HOST:PORT, for networks without multicast."""
    mdns: bool = True
    mdns_interfaces: tuple[str, ...] = ()
    """Interface addresses to browse on; empty: every interface."""
    cluster: str = DEFAULT_CLUSTER
    insecure: bool = False
    """Plaintext to nodes, no CA, no API keys (labs only)."""
    join_listen: str | None = DEFAULT_JOIN_ADDRESS
    """Where nodes join (TLS); None: no join endpoint."""
    node_cert_lifetime_s: float = 24 * 3600.0
    store: str = ""
    """Where the state lives: "" for SQLite in the data folder, or
    `etcd://HOST:PORT,HOST:PORT,...` for an etcd cluster shared by several controllers."""
    etcd_ca: Path | None = None
    """TLS to etcd: the CA that signed its certificates (with etcd_cert/etcd_key: a client
    certificate)."""
    etcd_cert: Path | None = None
    etcd_key: Path | None = None
    lease_ttl_s: int = DEFAULT_LEASE_TTL_S
    """With etcd: the leader's lease; a dead or cut-off leader is replaced within it."""
