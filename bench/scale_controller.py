"""The controller process a bench/controller_scale.py row measures: `edgectl controller`
on loopback with the row's store (its own process, so its CPU and memory are its own), the
waits until it serves and may write, and what its log says when a row fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from scale_store import StoreUnderTest

from edgefleet.v1 import controller_pb2
from edgefleet_common.ports import free_port

REPO = Path(__file__).resolve().parents[1]
LEADER_TIMEOUT_S = 60.0
ERROR_LINE = re.compile(r"^[\w.]*(Error|Unavailable|NotLeader)\b[^:]*: ")
"""The last line of a logged traceback: `module.SomeError: what happened`."""


def start_controller(
    data_dir: Path, store: StoreUnderTest, log: Path, *, gateway: str = "off"
) -> tuple[subprocess.Popen[bytes], str]:
    """`edgectl controller` on loopback with the row's store; its output goes to `log`.
    `gateway`: where its gateway (and dashboard) listens, or off."""
    address = f"127.0.0.1:{free_port()}"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with log.open("wb") as output:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "orchestrator.cli.main",
                "controller",
                "--listen",
                address,
                "--data-dir",
                str(data_dir),
                *store.options,
                "--no-mdns",
                "--gateway-listen",
                gateway,
                # The simulated nodes serve plaintext gRPC (no certificates): this measures
                # scheduling and status handling, not TLS.
                "--insecure",
                "--join-listen",
                "off",
                "--log-level",
                "warning",
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    return process, address


def log_tail(log: Path, lines: int = 15) -> str:
    """The controller's last output lines, for a failure message."""
    try:
        text = log.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return "(no controller output)"
    return "\n".join(f"  controller | {line}" for line in text) or "(no controller output)"


async def wait_serving(address: str, timeout: float = 30.0) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(grpc.RpcError):
                answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            await asyncio.sleep(0.05)
    raise RuntimeError(f"controller at {address} did not start")


async def wait_in_charge(api: Any, timeout: float = LEADER_TIMEOUT_S) -> None:
    """Until the controller may write: it leads (etcd) or runs alone (SQLite)."""
    deadline = time.monotonic() + timeout
    role = "no answer"
    while time.monotonic() < deadline:
        with contextlib.suppress(grpc.RpcError):
            status = await api.GetStatus(controller_pb2.GetStatusRequest(), timeout=2.0)
            role = status.control_plane.role or "unset"
            if role in ("leader", "single"):
                return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"the controller did not lead within {timeout:.0f} s (role: {role})")


def last_error(log: Path) -> str:
    """The controller's last logged error (`SomeError: …`), or ""."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    found = [line for line in lines if ERROR_LINE.match(line)]
    return found[-1][:300] if found else ""
