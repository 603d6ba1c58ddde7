"""A real `edge-node run` process for tests: started, reached over gRPC, stopped, checked.

`start_node(...)` runs `python -m node_agent.cli run` with its own data folder,
lets it pick a free port (the daemon logs `address=HOST:PORT`), and returns once
its gRPC health check answers SERVING. The `NodeProcess` it returns gives a
channel and stubs, the node's log (for failure messages), its llama.cpp server
children, and two ways to end it: `terminate()` (SIGTERM; the exit code must be
0 and every model server must be gone) and `kill()` (SIGKILL; the model servers
must die with it, as the kernel's parent-death signal promises). `close()` is
for cleanup after a failure: it kills whatever is left, by process id.

Nothing here is specific to one test: the controller's tests start nodes with
other ids, extra arguments, environments, or inside a network namespace
(`prefix=["ip", "netns", "exec", NS]` with `listen_host` the namespace's address).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

import grpc
import psutil
from grpc_health.v1 import health_pb2, health_pb2_grpc

from edgefleet.v1 import node_pb2_grpc
from edgefleet_common.grpc_transport import client_options
from edgefleet_common.join_token import TOKEN_ENV
from tests.cluster_pki import node_aio_channel, node_channel, seed_node
from tests.conftest import REPO
from tests.netlab import Proc

RUNTIME_MARK = "llama-server"
"""The program name of every model server a node starts (llama.cpp's server)."""

_SERVING = re.compile(r"edge-node serving\b")
_ADDRESS = re.compile(r"\baddress\"?[=:]\s*\"?(?P<host>[^\s\"]+):(?P<port>\d+)")
_METRICS = re.compile(r"\bmetrics_port\"?[=:]\s*(?P<port>\d+)")


def environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment plus `extra`, with the repository importable from any
    working folder, and no `EDGEFLEET_CONTROLLER` (each test names its controller)."""
    env = {**os.environ, **(extra or {})}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env.pop("EDGEFLEET_CONTROLLER", None)
    return env


def unique_id(prefix: str) -> str:
    """A node id no other process on this machine uses (mDNS on loopback is shared)."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def runtime_servers(pid: int) -> list[psutil.Process]:
    """The llama.cpp servers among a process's descendants."""
    found = []
    with contextlib.suppress(psutil.Error):
        for child in psutil.Process(pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                command = child.cmdline()
                if command and Path(command[0]).name == RUNTIME_MARK:
                    found.append(child)
    return found


def gone(process: psutil.Process) -> bool:
    """True once a process has exited with all its threads, so its ports are closed.

    An orphan killed here may stay a zombie (nobody reaps it), which is gone enough.
    But a multi-threaded process shows as a zombie as soon as its first thread exits,
    while the others still hold its files and ports: those must be gone too.
    """
    try:
        if not process.is_running():
            return True
        if process.status() != psutil.STATUS_ZOMBIE:
            return False
    except psutil.NoSuchProcess:
        return True
    try:
        return len(os.listdir(f"/proc/{process.pid}/task")) <= 1
    except FileNotFoundError:
        return True


def wait_gone(processes: Sequence[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Those of `processes` still alive after up to `timeout` seconds."""
    deadline = time.monotonic() + timeout
    alive = [p for p in processes if not gone(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [p for p in alive if not gone(p)]
    return alive


@dataclass
class NodeProcess:
    """One running edge-node daemon started by a test."""

    node_id: str
    data_dir: Path
    argv: list[str]
    process: Proc
    host: str
    port: int
    metrics_port: int | None
    secure: bool = True
    """Started with a certificate from the test CA (else `--insecure`)."""
    _channels: list[grpc.Channel] = field(default_factory=list)
    _seen_servers: dict[int, psutil.Process] = field(default_factory=dict)

    @property
    def address(self) -> str:
        """`HOST:PORT` of the node API."""
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        """The daemon's process id."""
        return self.process.pid

    # -- talking to it ------------------------------------------------------------------

    def channel(self) -> grpc.Channel:
        """A new blocking channel to the node (closed by `close`), with the fleet's options
        (mutual TLS as the controller, unless the node runs `--insecure`)."""
        channel = (
            node_channel(self.node_id, self.address)
            if self.secure
            else grpc.insecure_channel(self.address, options=client_options())
        )
        self._channels.append(channel)
        return channel

    def stub(self) -> node_pb2_grpc.NodeServiceStub:
        """A NodeService stub on a new channel."""
        return node_pb2_grpc.NodeServiceStub(self.channel())

    def aio_channel(self) -> grpc.aio.Channel:
        """A new asyncio channel to the node; the caller closes it (`await channel.close()`)."""
        if self.secure:
            return node_aio_channel(self.node_id, self.address)
        return grpc.aio.insecure_channel(self.address, options=client_options())

    def metrics_url(self) -> str:
        """The node's Prometheus endpoint (started with `metrics=True`)."""
        assert self.metrics_port, "start the node with metrics=True"
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def log(self, lines: int = 60) -> str:
        """The last lines the node wrote, for failure messages."""
        return f"edge-node {self.node_id} (pid {self.pid}) log:\n{self.process.tail(lines)}"

    def runtime_servers(self) -> list[psutil.Process]:
        """The node's llama.cpp server children now (also remembered for `close`)."""
        servers = runtime_servers(self.pid)
        self._seen_servers.update((p.pid, p) for p in servers)
        return servers

    def rss(self) -> int:
        """Resident memory of the daemon alone, in bytes."""
        return int(psutil.Process(self.pid).memory_info().rss)

    # -- ending it ----------------------------------------------------------------------

    def terminate(self, timeout: float = 15.0) -> None:
        """SIGTERM; asserts a clean exit (code 0) with every model server gone."""
        servers = self.runtime_servers()
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"edge-node did not stop within {timeout:.0f}s of SIGTERM\n{self.log()}"
            ) from None
        self.process.reap()
        self._close_channels()
        assert code == 0, f"edge-node exited with {code} on SIGTERM\n{self.log()}"
        alive = wait_gone(servers, 5.0)
        assert not alive, f"model servers outlived a clean stop: {alive}\n{self.log()}"

    def kill(self, timeout: float = 10.0) -> list[psutil.Process]:
        """SIGKILL; asserts that its model servers die with it. Returns those servers."""
        servers = self.runtime_servers()
        self.process.kill()
        self.process.wait(timeout)
        self.process.reap()
        self._close_channels()
        alive = wait_gone(servers, timeout)
        assert not alive, f"model servers outlived a killed node (orphans): {alive}"
        return servers

    def close(self) -> None:
        """Kill the node and any model server of it that is left (idempotent; for cleanup)."""
        if self.process.poll() is None:
            self.runtime_servers()
            self.process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(10)
        self.process.reap()
        self._close_channels()
        for server in self._seen_servers.values():
            if not gone(server):
                with contextlib.suppress(psutil.Error):
                    server.kill()

    def _close_channels(self) -> None:
        for channel in self._channels:
            channel.close()
        self._channels.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()


def start_node(
    node_id: str,
    data_dir: Path,
    *,
    listen_host: str = "127.0.0.1",
    port: int = 0,
    catalog: Path | None = None,
    mdns_interfaces: Sequence[str] | None = None,
    metrics: bool = False,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    prefix: Sequence[str] = (),
    ready_timeout: float = 30.0,
    secure: bool = True,
    join: tuple[str, str] | None = None,
    health_check: bool = True,
) -> NodeProcess:
    """Start `edge-node run` (mDNS off unless interfaces are given) and wait until its
    health check answers SERVING.

    Trust: by default the node holds a certificate from the test run's CA
    (`tests.cluster_pki`); `join=(endpoint, token)` makes it join a controller
    instead; `secure=False` runs it `--insecure`. `health_check=False` returns once it
    logs that it serves (for a node no client may call).

    `env` is added to this process's environment; `prefix` goes before the
    command (e.g. `ip netns exec NS`). On failure the node is killed and the
    AssertionError carries its log.
    """
    argv = [
        sys.executable, "-m", "node_agent.cli", "run",
        "--id", node_id,
        "--listen", f"{listen_host}:{port}",
        "--data-dir", str(data_dir),
        "--metrics", f"{'127.0.0.1:0' if metrics else 'off'}",
        # No gateway unless a test asks for one in `extra_args` (the later option wins):
        # nodes started together would all want the default port.
        "--gateway-listen", "off",
    ]  # fmt: skip
    if mdns_interfaces:
        for interface in mdns_interfaces:
            argv += ["--mdns-interface", interface]
    else:
        argv.append("--no-advertise")
    if catalog is not None:
        argv += ["--catalog", str(catalog)]
    if join is not None:  # (join endpoint or "" to find it over mDNS, token)
        argv += ["--controller", join[0]] if join[0] else []
        env = {**(env or {}), TOKEN_ENV: join[1]}
    elif secure:
        seed_node(data_dir, node_id)
    else:
        argv.append("--insecure")
    argv += extra_args
    process = Proc(
        [*prefix, *argv],
        label=f"edge-node {node_id}",
        cwd=REPO,
        env=environment(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # Its own session: a Ctrl-C in the test's terminal is the test's to handle.
        start_new_session=True,
    )
    try:
        line = process.expect(_SERVING.pattern, ready_timeout).string
        address = _ADDRESS.search(line)
        assert address is not None, f"no address in the serving line: {line}"
        metrics_port = _METRICS.search(line)
        host = address["host"].strip("[]")
        node = NodeProcess(
            node_id=node_id,
            data_dir=data_dir,
            argv=argv,
            process=process,
            host="127.0.0.1" if host in ("0.0.0.0", "") else host,
            port=int(address["port"]),
            metrics_port=int(metrics_port["port"]) if metrics_port else None,
            secure=secure,
        )
    except BaseException:
        process.kill()
        process.reap()
        raise
    if not health_check:  # e.g. a node that failed to join: nobody can call it
        return node
    try:
        wait_serving(node, ready_timeout)
    except BaseException:
        node.close()
        raise
    return node


def wait_serving(node: NodeProcess, timeout: float) -> None:
    """Until the node's gRPC health check answers SERVING (AssertionError with its log)."""
    deadline = time.monotonic() + timeout
    with node.channel() as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while True:
            left = deadline - time.monotonic()
            try:
                answer = health.Check(
                    health_pb2.HealthCheckRequest(service="edgefleet.v1.NodeService"),
                    timeout=max(min(left, 2.0), 0.1),
                    wait_for_ready=True,
                )
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError as exc:
                last = f"{exc.code()}: {exc.details()}"
            else:
                last = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
            if node.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"edge-node health check not SERVING within {timeout:.0f}s ({last})\n"
                    f"{node.log()}"
                )
            time.sleep(0.05)
