"""`edgectl up`: everything on this box in one go — the single-device default.

Starts a controller (in this process), a local edge-node (a child process that
dies with this one), applies the manifest (the embedded quickstart unless `-f`
says otherwise), shows progress until every agent is ready, asks the first agent
one question so the real model answers, prints the status and how to go on,
then serves until Ctrl-C and stops everything cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

from edgefleet.v1 import common_pb2, controller_pb2
from edgefleet_common.child_process import die_with_parent
from edgefleet_common.join_token import TOKEN_ENV
from edgefleet_common.logs import configure_logging
from edgefleet_common.paths import state_dir
from edgefleet_common.ports import free_port, is_loopback
from orchestrator.cli import rollout
from orchestrator.cli.apply_command import apply_manifest
from orchestrator.cli.chat_command import stream_reply
from orchestrator.cli.client import Controller, ControllerAddress
from orchestrator.cli.console import Consoles
from orchestrator.cli.controller_command import add_controller_options, config_from
from orchestrator.cli.manifests import load_reporting
from orchestrator.cli.status_command import print_status
from orchestrator.cli.watch import interruptible
from orchestrator.config import DEFAULT_JOIN_ADDRESS, ControllerConfig
from orchestrator.errors import EdgeFleetError
from orchestrator.manifest import LoadedManifest, load_text

log = logging.getLogger("orchestrator")

QUICKSTART = "quickstart.yaml"
NODE_STOP_S = 15.0
FIRST_QUESTION = "Say hello and tell me in one sentence what you can do."


def register(commands: Any) -> None:
    """Add the `up` command."""
    parser = commands.add_parser(
        "up",
        help="run a controller, a local node and a manifest on this box",
        description=(
            "Start a controller and a local edge-node, apply a manifest (the embedded "
            "quickstart by default) and serve until Ctrl-C."
        ),
    )
    parser.add_argument(
        "-f", "--filename", metavar="FILE", help="manifest (default: the embedded quickstart)"
    )
    parser.add_argument("--catalog", type=Path, help="model catalog file for the local node")
    parser.add_argument(
        "--node-listen",
        default="127.0.0.1:0",
        metavar="HOST:PORT",
        help="the local node's API address (default: a free loopback port)",
    )
    parser.add_argument(
        "--timeout", type=float, default=rollout.DEFAULT_TIMEOUT_S, help="seconds to get ready"
    )
    parser.add_argument(
        "--no-greeting", action="store_true", help="do not ask the first agent a question"
    )
    add_controller_options(parser)
    parser.set_defaults(run=run, mdns=False, data_dir=None)


def quickstart_manifest() -> LoadedManifest:
    """The embedded quickstart manifest (also shipped as manifests/quickstart.yaml)."""
    text = resources.files("orchestrator").joinpath(QUICKSTART).read_text(encoding="utf-8")
    return load_text(text, source=QUICKSTART)


def started_node_reason(reason: str, node_id: str, log_path: Path) -> str:
    """`reason` as `up` shows it: the controller's hint to start the local node with
    `edge-node run` is wrong when `up` started that node itself, so it says instead that
    `up` waits for the node it started, and where that node's log is."""
    return reason.replace(
        f"waiting for the local node `{node_id}` to connect "
        f"(start it with `edge-node run --id {node_id}`)",
        f"waiting for the local node `{node_id}` that `edgectl up` started to connect "
        f"(if it does not, see its log: {log_path})",
    )


class _ControllerThread:
    """A controller running on its own event loop in a thread of this process."""

    def __init__(self, config: ControllerConfig) -> None:
        self._config = config
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._error: BaseException | None = None
        from orchestrator.controller import Controller  # the whole stack: see controller_command

        self._controller = Controller(config)
        self._thread = threading.Thread(target=self._run, name="controller", daemon=True)

    def start(self) -> str:
        """Start it; returns its API address (raises what kept it from starting)."""
        self._thread.start()
        self._started.wait()
        if self._error is not None:
            raise EdgeFleetError(f"the controller cannot start: {self._error}")
        return self._controller.address

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._controller.start())
        except BaseException as exc:  # reported to the starting thread
            self._error = exc
            self._started.set()
            return
        self._started.set()
        self._loop.run_forever()

    def join(self) -> tuple[str, str] | None:
        """(join endpoint, a join token) for the local node; None with `--insecure`."""
        trust = self._controller.trust
        if trust is None:
            return None
        token = trust.token_file.read_text().strip()
        return f"127.0.0.1:{self._controller.join_port}", token

    def stop(self) -> None:
        """Stop the controller and its loop."""
        if not self._thread.is_alive():
            return
        done = asyncio.run_coroutine_threadsafe(self._controller.close(), self._loop)
        with contextlib.suppress(Exception):
            done.result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)


class _LocalNode:
    """The local edge-node, a child process that dies with this one."""

    def __init__(
        self, node_id: str, listen: str, data_dir: Path, catalog: Path | None, gateway: str
    ) -> None:
        self.node_id = node_id
        self.gateway = gateway
        """The node's OpenAI gateway address (HOST:PORT), or `off`."""
        host, _, port = listen.rpartition(":")
        self.address = f"{host}:{port if port != '0' else free_port(host)}"
        self.log_path = data_dir / f"node-{node_id}.log"
        self._data_dir = data_dir / f"node-{node_id}"
        self._catalog = catalog
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, join: tuple[str, str] | None) -> None:
        """Spawn the daemon, its output going to its log file; it joins the local cluster
        with `join` (endpoint, token), or runs `--insecure` without it."""
        command = [
            sys.executable,
            "-m",
            "node_agent.cli",
            "run",
            "--id",
            self.node_id,
            "--listen",
            self.address,
            "--data-dir",
            str(self._data_dir),
            "--no-advertise",
            "--metrics",
            "127.0.0.1:0",
            "--gateway-listen",
            self.gateway,
        ]
        if self._catalog is not None:
            command += ["--catalog", str(self._catalog)]
        environment = dict(os.environ)
        if join is None:
            command.append("--insecure")
        else:
            # The token goes by environment, not argv: other users can read argv.
            command += ["--controller", join[0]]
            environment[TOKEN_ENV] = join[1]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log_file:
            self._process = subprocess.Popen(
                die_with_parent(command),
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=environment,
            )

    def exit_code(self) -> int | None:
        """None while it runs."""
        return self._process.poll() if self._process is not None else None

    def log_tail(self, lines: int = 15) -> str:
        """The end of its log, to explain a failure."""
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def reword(self, reason: str) -> str:
        """A reason from the controller as `up` shows it (see `started_node_reason`)."""
        return started_node_reason(reason, self.node_id, self.log_path)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not stop in time."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(NODE_STOP_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def _interrupts() -> Iterator[threading.Event]:
    """An event set by SIGINT/SIGTERM while the block runs."""
    stop = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _load(args: argparse.Namespace, consoles: Consoles) -> LoadedManifest | None:
    # The embedded quickstart is checked by the tests; a file is reported like `apply` does.
    return load_reporting(args.filename, consoles) if args.filename else quickstart_manifest()


def run(args: argparse.Namespace, consoles: Consoles) -> int:
    """`edgectl up`."""
    loaded = _load(args, consoles)
    if loaded is None:
        return 1
    data_dir: Path = args.data_dir or state_dir() / "up"
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "controller.log").touch()
    configure_logging(args.log_level, args.log_format)
    _log_to(data_dir / "controller.log")
    # The box's own front door is its node's gateway, which keeps serving while the
    # controller restarts: `--gateway-listen` is the node's here, and the controller
    # serves none.
    node = _LocalNode(
        args.local_node, args.node_listen, data_dir, args.catalog, args.gateway_listen
    )
    config = dataclasses.replace(
        config_from(args, data_dir=data_dir / "controller"), gateway_listen=None
    )
    # One box: the local node joins on loopback, not on every interface.
    join_listen = (
        f"127.0.0.1:{free_port()}"
        if args.join_listen == DEFAULT_JOIN_ADDRESS
        else config.join_listen
    )
    config = dataclasses.replace(
        config,
        static_nodes={**config.static_nodes, node.node_id: node.address},
        join_listen=join_listen,
    )
    controller = _ControllerThread(config)
    # Ctrl-C must stop `up` while it brings things up too, even when it was started with
    # SIGINT ignored (a background job of a shell without job control).
    with interruptible():
        return _serve(controller, node, loaded, args, consoles, data_dir)


def _serve(
    controller: _ControllerThread,
    node: _LocalNode,
    loaded: LoadedManifest,
    args: argparse.Namespace,
    consoles: Consoles,
    data_dir: Path,
) -> int:
    """Start the controller and the local node, apply, and serve until Ctrl-C."""
    address = controller.start()
    consoles.err.print(f"controller at {address}; logs in {data_dir}", style="dim", markup=False)
    try:
        node.start(controller.join())
        with Controller.connect(ControllerAddress(address, "started by up")) as client:
            code = _bring_up(client, loaded, node, args, consoles)
            if code != 0:
                return code
            with _interrupts() as stop:
                consoles.out.print("serving; press Ctrl-C to stop", style="bold", markup=False)
                while not stop.wait(0.5):
                    if node.exit_code() is not None:
                        consoles.err.print(
                            f"error: the local node stopped ({node.exit_code()}):\n"
                            + node.log_tail(),
                            markup=False,
                        )
                        return 1
        consoles.err.print("stopping…", style="dim", markup=False)
        return 0
    finally:
        node.stop()
        controller.stop()


def _log_to(path: Path) -> None:
    """Send the in-process controller's logs to a file: the terminal shows progress."""
    root = logging.getLogger()
    formatter = root.handlers[0].formatter if root.handlers else None
    handler = logging.FileHandler(path)
    handler.setFormatter(formatter)
    root.handlers[:] = [handler]


def _bring_up(
    client: Controller,
    loaded: LoadedManifest,
    node: _LocalNode,
    args: argparse.Namespace,
    consoles: Consoles,
) -> int:
    response = apply_manifest(client, loaded, consoles)
    consoles.out.print()
    expected = rollout.Expected(
        deployments=frozenset({response.revision.deployment or loaded.desired.name}),
        agents=frozenset(a.name for a in loaded.desired.agents),
    )
    code = rollout.wait_for_rollout(
        client, expected, consoles, timeout=args.timeout, reword=node.reword
    )
    if code != 0:
        consoles.err.print(f"the local node's log ({node.log_path}):", markup=False)
        consoles.err.print(node.log_tail(), markup=False, highlight=False)
        return code
    agents = [a.name for a in loaded.desired.agents]
    if agents and not args.no_greeting:
        consoles.out.print()
        consoles.out.print(f"{agents[0]}> ", end="", style="bold", markup=False)
        request = controller_pb2.ChatRequest(
            agent=agents[0],
            messages=[common_pb2.ChatMessage(role="user", content=FIRST_QUESTION)],
            options=common_pb2.GenerationOptions(max_tokens=96),
        )
        stream_reply(client, request, consoles)
    status = client.call(
        "GetStatus", controller_pb2.GetStatusRequest(), controller_pb2.ClusterStatus
    )
    consoles.out.print()
    print_status(status, consoles)
    consoles.out.print()
    target = client.address.target
    if agents:
        consoles.out.print(
            f'chat:     edgectl --controller {target} chat {agents[0]} "hello"', markup=False
        )
    consoles.out.print(f"status:   edgectl --controller {target} status", markup=False)
    if node.gateway != "off":
        # Off loopback the node's gateway speaks HTTPS and wants an API key.
        scheme = "http" if is_loopback(node.gateway) else "https"
        consoles.out.print(
            f"OpenAI:   base_url={scheme}://{node.gateway}/v1  "
            f"model={agents[0] if agents else '…'}",
            markup=False,
        )
    return 0
