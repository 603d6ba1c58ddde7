"""`edge-node`: run the node daemon on this box, or show what this box offers.

Exit codes: 0 ok, 1 failed, 2 usage error, 3 a node to query could not be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import grpc
from google.protobuf.json_format import MessageToDict

from edgefleet.v1 import node_pb2, node_pb2_grpc
from edgefleet_common.cluster import DEFAULT_CLUSTER
from edgefleet_common.grpc_transport import client_options
from edgefleet_common.join_token import TOKEN_ENV, JoinToken, TokenFormatError
from edgefleet_common.logs import configure_logging
from edgefleet_common.pki import DEFAULT_JOIN_PORT, Credentials, PkiError, fingerprint, load_cert
from edgefleet_common.version import __version__
from node_agent.capacity import read_capacity
from node_agent.catalog import Catalog
from node_agent.config import (
    DEFAULT_GATEWAY_PORT,
    DEFAULT_METRICS_PORT,
    DEFAULT_PORT,
    NodeConfig,
    default_data_dir,
)
from node_agent.errors import NodeError
from node_agent.node_trust import (
    JoinError,
    ServingCredentials,
    fetch_served_cert,
    join,
    load_credentials,
    unjoined_credentials,
)
from node_agent.runtimes.registry import runtime_class

log = logging.getLogger("node_agent")


def host_port(text: str, default_port: int) -> tuple[str, int]:
    """`HOST:PORT`, `HOST`, `:PORT` or `[V6]:PORT` → (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or "]" in port:
        host, port = text, str(default_port)
    host = host.strip("[]") or "0.0.0.0"
    try:
        number = int(port)
    except ValueError:
        raise argparse.ArgumentTypeError(f"`{text}`: the port must be a number") from None
    if not 0 <= number < 65536:
        raise argparse.ArgumentTypeError(f"`{text}`: the port must be 0-65535")
    return host, number


def label(text: str) -> tuple[str, str]:
    """`KEY=VALUE` → (key, value)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"`{text}`: a label is KEY=VALUE")
    return key, value


def build_parser() -> argparse.ArgumentParser:
    """The full command-line grammar."""
    parser = argparse.ArgumentParser(
        prog="edge-node", description="The EdgeFleet node daemon for one edge box."
    )
    parser.add_argument("--version", action="version", version=f"edge-node {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = commands.add_parser("run", help="run the daemon", description="Run the node daemon.")
    run.add_argument("--id", required=True, dest="node_id", help="this node's id")
    _add_serving_arguments(run)
    run.add_argument("--llama-threads", type=int, default=1, help="llama.cpp threads per model")
    run.add_argument("--llama-context", type=int, default=2048, help="llama.cpp context size")
    _add_membership_arguments(run)
    run.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    run.add_argument("--log-format", default="text", choices=("text", "json"))
    run.set_defaults(run=run_daemon)

    info = commands.add_parser(
        "info",
        help="show this box's capacity, runtimes and models",
        description="Show this box's capacity, runtimes and catalog, or ask a running node.",
    )
    info.add_argument("--catalog", type=Path, help="model catalog file (YAML)")
    info.add_argument("--node", metavar="HOST:PORT", help="ask the node daemon running there")
    info.add_argument("-o", "--output", choices=("text", "json"), default="text")
    info.set_defaults(run=run_info)
    return parser


def _add_serving_arguments(run: argparse.ArgumentParser) -> None:
    """`edge-node run`: where the node serves, keeps its state, and how it is found."""
    run.add_argument(
        "--listen",
        default=f"0.0.0.0:{DEFAULT_PORT}",
        metavar="HOST:PORT",
        help=f"node API address (default 0.0.0.0:{DEFAULT_PORT}; port 0 picks one)",
    )
    run.add_argument(
        "--data-dir", type=Path, help="local state (default: under the user's state dir)"
    )
    run.add_argument("--catalog", type=Path, help="model catalog file (YAML)")
    run.add_argument(
        "--advertise",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="advertise over mDNS (default on)",
    )
    run.add_argument(
        "--mdns-interface",
        action="append",
        default=[],
        metavar="ADDRESS",
        help="advertise only on this interface address (repeatable; default: all)",
    )
    run.add_argument(
        "--cluster", default=DEFAULT_CLUSTER, help=f"cluster name (default: {DEFAULT_CLUSTER})"
    )
    run.add_argument("--label", action="append", type=label, default=[], metavar="KEY=VALUE")
    run.add_argument(
        "--heartbeat-interval",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="status heartbeat interval (default 1)",
    )
    run.add_argument(
        "--metrics",
        default=f"127.0.0.1:{DEFAULT_METRICS_PORT}",
        metavar="HOST:PORT|off",
        help=f"Prometheus /metrics address (default 127.0.0.1:{DEFAULT_METRICS_PORT})",
    )
    run.add_argument(
        "--gateway-listen",
        default=f"127.0.0.1:{DEFAULT_GATEWAY_PORT}",
        metavar="HOST:PORT|off",
        help=f"the node's OpenAI-compatible gateway (default 127.0.0.1:{DEFAULT_GATEWAY_PORT}; "
        "off loopback it serves HTTPS and needs API keys)",
    )


def _add_membership_arguments(run: argparse.ArgumentParser) -> None:
    """`edge-node run`: joining the cluster, or serving without TLS."""
    run.add_argument(
        "--join",
        metavar="TOKEN",
        default=os.environ.get(TOKEN_ENV) or None,
        help=f"join the cluster with this token (or ${TOKEN_ENV}; from `edgectl token create`)",
    )
    run.add_argument(
        "--controller",
        action="append",
        default=[],
        metavar="HOST:PORT[,HOST:PORT...]",
        help=f"the controllers' join endpoints (default port {DEFAULT_JOIN_PORT}; "
        "comma-separated or repeated: tried in turn); without it, --join looks for them "
        "over mDNS",
    )
    run.add_argument(
        "--insecure",
        action="store_true",
        help="serve the node API without TLS or authentication (labs only: anyone who "
        "reaches the port can command this node)",
    )


def join_addresses(values: Sequence[str]) -> list[str]:
    """`--controller` values (each one or more comma-separated `HOST[:PORT]`) → the join
    endpoints as HOST:PORT, in order, without repeats."""
    addresses: list[str] = []
    for value in values:
        for part in value.split(","):
            part = part.strip()
            if not part:
                continue
            address = part if ":" in part else f"{part}:{DEFAULT_JOIN_PORT}"
            if address not in addresses:
                addresses.append(address)
    return addresses


def config_from(args: argparse.Namespace) -> NodeConfig:
    """The daemon's configuration from its command line."""
    try:
        host, port = host_port(args.listen, DEFAULT_PORT)
        metrics_host, metrics_port = (
            ("", None) if args.metrics == "off" else host_port(args.metrics, DEFAULT_METRICS_PORT)
        )
        gateway_host, gateway_port = (
            (None, DEFAULT_GATEWAY_PORT)
            if args.gateway_listen == "off"
            else host_port(args.gateway_listen, DEFAULT_GATEWAY_PORT)
        )
    except argparse.ArgumentTypeError as exc:
        raise SystemExit(f"edge-node: error: {exc}") from None
    return NodeConfig(
        node_id=args.node_id,
        listen_host=host,
        listen_port=port,
        data_dir=args.data_dir or default_data_dir(args.node_id),
        catalog_file=args.catalog,
        advertise=args.advertise,
        mdns_interfaces=tuple(args.mdns_interface),
        cluster=args.cluster,
        labels=dict(args.label),
        heartbeat_interval_s=args.heartbeat_interval,
        metrics_host=metrics_host or "127.0.0.1",
        metrics_port=metrics_port,
        llama_threads=args.llama_threads,
        llama_context=args.llama_context,
        gateway_host=gateway_host,
        gateway_port=gateway_port,
    )


async def _serve(config: NodeConfig, serving: ServingCredentials | None) -> None:
    # The daemon and its servicer import the whole node stack, Agent Framework included;
    # `edge-node info` and `--help` need none of it.
    from node_agent.daemon import Node
    from node_agent.server import NodeService

    node = Node(config, serving=serving)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await node.start(NodeService)
        await stop.wait()
        log.info("stopping on signal")
    finally:
        await node.close()


def membership(args: argparse.Namespace, config: NodeConfig) -> Credentials:
    """The node's certificate: the saved one, or a new one from joining with `--join`."""
    saved = load_credentials(config.data_dir, config.node_id)
    token = JoinToken.parse(args.join) if args.join else None
    if saved is not None and (
        token is None or fingerprint(load_cert(saved.ca_pem)) == token.ca_fingerprint
    ):
        return saved
    if token is None:
        raise JoinError(
            f"node {config.node_id} has not joined a cluster: start it once with --join TOKEN "
            "--controller HOST:PORT (`edgectl token create` on the controller makes a token), "
            "or run it with --insecure"
        )
    addresses = join_addresses(args.controller) or controllers_over_mdns(token, config)
    joined = join(config.node_id, token, addresses, config.data_dir)
    log.info(
        "joined the cluster",
        extra={
            "controllers": ",".join(addresses),
            "not_after": f"{joined.cert.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}",
        },
    )
    return joined


def controllers_over_mdns(token: JoinToken, config: NodeConfig) -> list[str]:
    """The join endpoints found over mDNS that answer with the CA the token names (every
    controller of the cluster advertises its own: any of them will do)."""
    # Imported here: zeroconf is for joining over mDNS only, not for every node that starts.
    from edgefleet_contract.join_advert import discover_join_endpoints

    found = discover_join_endpoints(config.mdns_interfaces or None)
    answering = []
    for endpoint in found:
        try:
            if fingerprint(fetch_served_cert(endpoint.address, timeout=5)) == token.ca_fingerprint:
                log.info("found the controller over mDNS", extra={"join": endpoint.address})
                answering.append(endpoint.address)
        except JoinError as exc:
            log.warning("a join endpoint did not answer", extra={"error": str(exc)})
    if answering:
        return answering
    raise JoinError(
        f"no controller of this token's cluster found over mDNS ({len(found)} join "
        "endpoint(s) seen); give --controller HOST:PORT[,HOST:PORT...]"
    )


def run_daemon(args: argparse.Namespace) -> int:
    """`edge-node run`."""
    configure_logging(args.log_level, args.log_format)
    config = config_from(args)
    if args.join and TOKEN_ENV not in os.environ:
        log.warning(f"the join token is on the command line, where `ps` shows it: use ${TOKEN_ENV}")
    # The token is needed once: keep it from child processes and runtime settings.
    os.environ.pop(TOKEN_ENV, None)
    serving = None
    if not args.insecure:
        try:
            serving = ServingCredentials(membership(args, config))
        except (JoinError, PkiError, TokenFormatError) as exc:
            # Serve anyway, with a certificate nobody trusts: the controller lists this
            # node as untrusted (an operator sees it), and it receives nothing.
            log.error(
                "edge-node is not a member of a cluster; it serves, but no controller will "
                "trust it until it joins",
                extra={"error": str(exc)},
            )
            serving = ServingCredentials(unjoined_credentials(config.node_id), joined=False)
    if args.insecure:
        log.warning(
            "INSECURE: the node API has no TLS and no authentication; anyone who reaches "
            f"{config.listen_host}:{config.listen_port} can command this node"
        )
    try:
        asyncio.run(_serve(config, serving))
    except (NodeError, OSError) as exc:
        log.error("edge-node cannot run", extra={"error": str(exc)})
        return 1
    return 0


def _local_info(catalog_file: Path | None) -> dict[str, object]:
    catalog = Catalog.load(catalog_file)
    capacity = read_capacity()
    runtimes = {}
    for name in ("llama.cpp", "ollama", "foundry-local", "vllm", "openai"):
        cls = runtime_class(name)
        runtimes[name] = cls.__doc__.splitlines()[0] if cls.__doc__ else name
    return {
        "version": __version__,
        "capacity": {
            "cpuCount": capacity.cpu_count,
            "memoryTotalBytes": capacity.memory_total_bytes,
            "memoryAvailableBytes": capacity.memory_available_bytes,
            "accelerators": list(capacity.accelerators),
        },
        "runtimes": runtimes,
        "catalog": {
            alias: {"runtime": entry.runtime, "source": entry.source}
            for alias in catalog.aliases()
            if (entry := catalog.entry(alias)) is not None
        },
    }


def _remote_info(address: str) -> dict[str, object]:
    with grpc.insecure_channel(address, options=client_options()) as channel:
        stub = node_pb2_grpc.NodeServiceStub(channel)
        info = stub.GetInfo(node_pb2.GetInfoRequest(), timeout=5)
    # Zero values too: `generation: 0` says the node runs nothing, which is worth showing.
    return MessageToDict(info, always_print_fields_with_no_presence=True)


def run_info(args: argparse.Namespace) -> int:
    """`edge-node info`."""
    try:
        info = _remote_info(args.node) if args.node else _local_info(args.catalog)
    except grpc.RpcError as exc:
        details = " ".join(str(exc.details() or exc.code()).split())  # one line
        print(
            f"edge-node: cannot reach the node at {args.node}: {details} (a node that is a "
            "cluster member answers only its controller: use `edgectl describe node ID`)",
            file=sys.stderr,
        )
        return 3
    except NodeError as exc:
        print(f"edge-node: {exc}", file=sys.stderr)
        return 1
    if args.output == "json":
        print(json.dumps(info, indent=2, sort_keys=True))
        return 0
    _print_text(info)
    return 0


def _print_text(info: dict[str, object], indent: str = "") -> None:
    for key, value in info.items():
        if isinstance(value, dict):
            print(f"{indent}{key}:" + ("" if value else " -"))
            _print_text(value, indent + "  ")
        elif isinstance(value, list) and any(isinstance(v, dict) for v in value):
            print(f"{indent}{key}:")
            for item in value:
                _print_item(item, indent + "  ")
        elif isinstance(value, list):
            print(f"{indent}{key}: {', '.join(_scalar(v) for v in value) or '-'}")
        else:
            print(f"{indent}{key}: {_scalar(value)}")


def _print_item(item: object, indent: str) -> None:
    """One element of a list, YAML-style: `- key: value` then the other keys under it."""
    if not isinstance(item, dict) or not item:
        print(f"{indent}- {_scalar(item)}")
        return
    (key, value), *rest = item.items()
    print(f"{indent}- {key}: {_scalar(value)}")
    _print_text(dict(rest), indent + "  ")


def _scalar(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None or value == "":
        return "-"
    return str(value)


def main(argv: Sequence[str] | None = None) -> int:
    """Run edge-node; returns the process exit code."""
    args = build_parser().parse_args(argv)
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
