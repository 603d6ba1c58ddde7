"""How an edge-node is started: its id, addresses, folders and timings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from edgefleet_common.cluster import DEFAULT_CLUSTER
from edgefleet_common.paths import state_dir
from edgefleet_common.ports import GATEWAY_PORT

DEFAULT_PORT = 7443
DEFAULT_METRICS_PORT = 9464
DEFAULT_GATEWAY_PORT = GATEWAY_PORT


def default_data_dir(node_id: str) -> Path:
    """`node-ID` in EdgeFleet's state folder (see `edgefleet_common.paths.state_dir`)."""
    return state_dir() / f"node-{node_id}"


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """Everything the daemon needs to start."""

    node_id: str
    listen_host: str = "0.0.0.0"
    listen_port: int = DEFAULT_PORT
    data_dir: Path = field(default_factory=lambda: Path("."))
    catalog_file: Path | None = None
    advertise: bool = True
    mdns_interfaces: tuple[str, ...] = ()
    """Addresses to advertise on; empty means every interface."""
    cluster: str = DEFAULT_CLUSTER
    labels: Mapping[str, str] = field(default_factory=dict)
    heartbeat_interval_s: float = 1.0
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = DEFAULT_METRICS_PORT
    """None: no metrics endpoint; 0: any free port."""
    llama_threads: int = 1
    llama_context: int = 2048
    gateway_host: str | None = None
    """Where the node's OpenAI-compatible gateway listens; None: no gateway (`edge-node
    run` defaults to 127.0.0.1)."""
    gateway_port: int = DEFAULT_GATEWAY_PORT
    """0: any free port."""
