"""`edgectl controller`: run the controller in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path
from typing import Any

from edgefleet_common.cluster import DEFAULT_CLUSTER
from edgefleet_common.logs import configure_logging
from edgefleet_common.paths import state_dir
from edgefleet_contract.units import parse_duration
from orchestrator.cli.console import Consoles
from orchestrator.config import (
    DEFAULT_CONTROLLER_ADDRESS,
    DEFAULT_GATEWAY_ADDRESS,
    DEFAULT_JOIN_ADDRESS,
    DEFAULT_LEASE_TTL_S,
    ControllerConfig,
)
from orchestrator.errors import EdgeFleetError
from orchestrator.etcd.target import parse_store_url
from orchestrator.manifest import LOCAL_NODE

log = logging.getLogger("orchestrator")


def duration_seconds(text: str) -> float:
    """`90s`, `15m`, `24h` (or plain seconds) → seconds."""
    try:
        seconds = parse_duration(float(text) if text.replace(".", "", 1).isdigit() else text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"`{text}`: {exc}") from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"`{text}`: must be more than zero")
    return seconds


def node_option(text: str) -> tuple[str, str]:
    """`ID=HOST:PORT` → (id, address)."""
    node_id, sep, address = text.partition("=")
    if not sep or not node_id or ":" not in address:
        raise argparse.ArgumentTypeError(f"`{text}`: a static node is ID=HOST:PORT")
    return node_id, address


def add_controller_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by `controller` and `up`."""
    parser.add_argument(
        "--data-dir", type=Path, help=f"state folder (default {state_dir() / 'controller'})"
    )
    parser.add_argument(
        "--listen",
        default=DEFAULT_CONTROLLER_ADDRESS,
        metavar="HOST:PORT",
        help=f"controller API address (default {DEFAULT_CONTROLLER_ADDRESS})",
    )
    parser.add_argument(
        "--gateway-listen",
        default=DEFAULT_GATEWAY_ADDRESS,
        metavar="HOST:PORT|off",
        help=f"OpenAI-compatible gateway address (default {DEFAULT_GATEWAY_ADDRESS})",
    )
    parser.add_argument(
        "--node",
        action="append",
        type=node_option,
        default=[],
        metavar="ID=HOST:PORT",
        help="a node at a static address (repeatable; for networks without multicast)",
    )
    parser.add_argument(
        "--mdns",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="find nodes over mDNS (default on)",
    )
    parser.add_argument(
        "--mdns-interface",
        action="append",
        default=[],
        metavar="ADDRESS",
        help="browse only on this interface address (repeatable; default: all)",
    )
    parser.add_argument(
        "--cluster", default=DEFAULT_CLUSTER, help=f"cluster name (default: {DEFAULT_CLUSTER})"
    )
    parser.add_argument("--local-node", default=LOCAL_NODE, help="node id single-device runs on")
    parser.add_argument(
        "--join-listen",
        default=DEFAULT_JOIN_ADDRESS,
        metavar="HOST:PORT|off",
        help=f"where nodes join with a token (TLS; default {DEFAULT_JOIN_ADDRESS})",
    )
    parser.add_argument(
        "--node-cert-lifetime",
        type=duration_seconds,
        default=24 * 3600.0,
        metavar="DURATION",
        help="lifetime of node certificates, renewed at two thirds (default 24h)",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="talk to nodes in plaintext and serve the gateway without API keys "
        "(labs only: anyone on the network can command the nodes)",
    )
    parser.add_argument(
        "--log-level", default="info", choices=("debug", "info", "warning", "error")
    )
    parser.add_argument("--log-format", default="text", choices=("text", "json"))


def register(commands: Any) -> None:
    """Add the `controller` command."""
    parser = commands.add_parser(
        "controller",
        help="run the controller",
        description="Run the controller: store, node discovery, reconciler, API and gateway.",
    )
    add_controller_options(parser)
    add_store_options(parser)
    parser.set_defaults(run=run)


def add_store_options(parser: argparse.ArgumentParser) -> None:
    """Where the controller keeps its state, and the leader's lease when it is shared."""
    group = parser.add_argument_group("state store")
    group.add_argument(
        "--store",
        default="sqlite",
        metavar="sqlite|etcd://HOST:PORT,...",
        help="sqlite: a file in the data folder (default; one controller); "
        "etcd://H1:2379,H2:2379,H3:2379: an etcd cluster that several controllers share, "
        "one of them leading",
    )
    group.add_argument("--etcd-ca", type=Path, metavar="FILE", help="TLS to etcd: its CA")
    group.add_argument(
        "--etcd-cert", type=Path, metavar="FILE", help="TLS to etcd: this controller's certificate"
    )
    group.add_argument(
        "--etcd-key", type=Path, metavar="FILE", help="TLS to etcd: the certificate's key"
    )
    group.add_argument(
        "--lease-ttl",
        type=lease_seconds,
        default=DEFAULT_LEASE_TTL_S,
        metavar="SECONDS",
        help="the leader's lease: a dead or cut-off leader is replaced within it "
        f"(default {DEFAULT_LEASE_TTL_S})",
    )


def lease_seconds(text: str) -> int:
    """A whole number of seconds from 2 to 60."""
    if not text.isdigit() or not 2 <= int(text) <= 60:
        raise argparse.ArgumentTypeError(f"`{text}`: the lease is 2 to 60 whole seconds")
    return int(text)


def config_from(args: argparse.Namespace, data_dir: Path | None = None) -> ControllerConfig:
    """The controller's configuration from the command line."""
    gateway = None if args.gateway_listen == "off" else args.gateway_listen
    return ControllerConfig(
        data_dir=data_dir or args.data_dir or state_dir() / "controller",
        listen=args.listen,
        gateway_listen=gateway,
        local_node=args.local_node,
        static_nodes=dict(args.node),
        mdns=args.mdns,
        mdns_interfaces=tuple(args.mdns_interface),
        cluster=args.cluster,
        insecure=args.insecure,
        join_listen=None if args.join_listen == "off" else args.join_listen,
        node_cert_lifetime_s=args.node_cert_lifetime,
        **store_settings(args),
    )


def store_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The store options (only `edgectl controller` has them; `up` runs on SQLite)."""
    store = getattr(args, "store", "sqlite")
    ca, cert, key = (getattr(args, f"etcd_{name}", None) for name in ("ca", "cert", "key"))
    if store == "sqlite":
        if ca or cert or key:
            raise EdgeFleetError("--etcd-ca, --etcd-cert and --etcd-key need --store etcd://...")
        return {}
    if not store.startswith("etcd://"):
        raise EdgeFleetError(
            f"--store {store}: give `sqlite` or etcd://HOST:PORT,HOST:PORT,... (the etcd "
            "cluster's client addresses)"
        )
    try:  # checked here, before anything starts: a typo is a usage error
        parse_store_url(store, ca=ca, cert=cert, key=key)
    except ValueError as exc:
        raise EdgeFleetError(f"--store: {exc}") from None
    return {
        "store": store,
        "etcd_ca": ca,
        "etcd_cert": cert,
        "etcd_key": key,
        "lease_ttl_s": args.lease_ttl,
    }


async def serve(config: ControllerConfig) -> None:
    """Run a controller until SIGTERM or SIGINT."""
    # Imported here: the controller brings the whole node stack (agents, runtimes), which
    # no other edgectl command needs at start-up.
    from orchestrator.controller import Controller

    controller = Controller(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await controller.start()
        await stop.wait()
        log.info("stopping on signal")
    finally:
        await controller.close()


def run(args: argparse.Namespace, consoles: Consoles) -> int:
    """`edgectl controller`."""
    configure_logging(args.log_level, args.log_format)
    try:
        asyncio.run(serve(config_from(args)))
    except OSError as exc:
        raise EdgeFleetError(str(exc)) from exc
    return 0
