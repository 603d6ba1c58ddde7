"""A real etcd cluster in a lab: one `/usr/bin/etcd` member per host (network namespace),
each with its own data folder, peer and client URLs on its host's lab address.

The test process, joined to the lab bridge, reaches every member's client port. A member
is stopped with SIGKILL (a crash) or SIGTERM and started again with the same data folder,
so it rejoins the cluster it was part of. Health and writes are checked with `etcdctl`
(API v3), as an operator would.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.netlab import Host, Lab, Proc
from tests.polling import wait_for

ETCD = "/usr/bin/etcd"
ETCDCTL = "/usr/bin/etcdctl"
CLIENT_PORT = 2379
PEER_PORT = 2380
MEMBERS = ("e1", "e2", "e3")


def etcd_available() -> str | None:
    """None when etcd and etcdctl are installed, else the reason (for `pytest.skip`)."""
    for program in (ETCD, ETCDCTL):
        if shutil.which(program) is None:
            return f"{program} is missing: install Debian's etcd-server and etcd-client"
    return None


@dataclass
class EtcdMember:
    """One etcd member: its host, its data folder and its process while it runs."""

    name: str
    host: Host
    data_dir: Path
    process: Proc | None = None

    @property
    def endpoint(self) -> str:
        """`HOST:PORT` of its client API."""
        return f"{self.host.ip}:{CLIENT_PORT}"

    @property
    def peer_url(self) -> str:
        """Where the other members reach it."""
        return f"http://{self.host.ip}:{PEER_PORT}"

    @property
    def running(self) -> bool:
        """True while its process lives."""
        return self.process is not None and self.process.poll() is None

    def log(self, lines: int = 20) -> str:
        """Its last output lines, for failure messages."""
        if self.process is None:
            return f"etcd {self.name}: never started"
        state = "running" if self.running else f"exited {self.process.poll()}"
        return f"etcd {self.name} ({state}):\n{self.process.tail(lines)}"


@dataclass
class LabEtcd:
    """Several etcd members, one per lab host, forming one cluster."""

    lab: Lab
    members: dict[str, EtcdMember]
    token: str

    @property
    def addresses(self) -> list[str]:
        """The members' lab addresses (what a partition from etcd cuts)."""
        return [m.host.ip for m in self.members.values()]

    def endpoints(self, names: Sequence[str] | None = None) -> str:
        """The store URL of the cluster (or of members `names`): `etcd://a:2379,b:2379,…`."""
        chosen = names if names is not None else list(self.members)
        return "etcd://" + ",".join(self.members[n].endpoint for n in chosen)

    def _argv(self, member: EtcdMember) -> list[str]:
        cluster = ",".join(f"{m.name}={m.peer_url}" for m in self.members.values())
        return [
            ETCD,
            "--name", member.name,
            "--data-dir", str(member.data_dir),
            "--listen-peer-urls", member.peer_url,
            "--initial-advertise-peer-urls", member.peer_url,
            "--listen-client-urls", f"http://{member.endpoint}",
            "--advertise-client-urls", f"http://{member.endpoint}",
            # Ignored once the data folder holds a member: a restart rejoins.
            "--initial-cluster", cluster,
            "--initial-cluster-state", "new",
            "--initial-cluster-token", self.token,
            "--logger", "zap",
            "--log-level", "warn",
        ]  # fmt: skip

    def start(self, name: str) -> EtcdMember:
        """Start member `name` (again, with the same data folder: it rejoins)."""
        member = self.members[name]
        if member.running:
            raise RuntimeError(f"etcd {name} already runs")
        member.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        member.process = member.host.popen(
            self._argv(member), label=f"etcd {name}", stdin=subprocess.DEVNULL
        )
        return member

    def stop(self, name: str, sig: signal.Signals = signal.SIGKILL, timeout: float = 10.0) -> None:
        """Stop member `name` with `sig` (SIGKILL: a crash; SIGTERM: a clean stop)."""
        member = self.members[name]
        process = member.process
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill_group()
            process.wait(timeout)
        process.reap()

    def close(self) -> None:
        """Kill every member (the lab removes the hosts)."""
        for name in self.members:
            self.stop(name)

    # -- asking the cluster ------------------------------------------------------------------

    def etcdctl(
        self, *args: str, names: Sequence[str] | None = None, timeout: float = 3.0
    ) -> subprocess.CompletedProcess[str]:
        """`etcdctl ARGS…` (API v3) against members `names` (default all), from the test
        process through the lab bridge; never raises on a non-zero exit."""
        chosen = names if names is not None else list(self.members)
        endpoints = ",".join(self.members[n].endpoint for n in chosen)
        argv = [
            ETCDCTL,
            f"--endpoints={endpoints}",
            "--dial-timeout=1s",
            f"--command-timeout={timeout:g}s",
            *args,
        ]
        try:
            return subprocess.run(
                argv,
                env={**os.environ, "ETCDCTL_API": "3"},
                capture_output=True,
                text=True,
                timeout=timeout + 5,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            return subprocess.CompletedProcess(argv, -1, "", f"timed out: {exc}")

    def healthy(self, name: str) -> bool:
        """True when member `name` answers a linearizable read (it has a leader and quorum)."""
        done = self.etcdctl("endpoint", "health", names=[name], timeout=2.0)
        return done.returncode == 0 and "is healthy" in done.stdout + done.stderr

    def can_write(self, key: str = "/lab/probe", value: str = "x", timeout: float = 2.0) -> bool:
        """True when a put through any running member succeeds within `timeout`."""
        running = [n for n, m in self.members.items() if m.running]
        if not running:
            return False
        done = self.etcdctl("put", key, value, names=running, timeout=timeout)
        return done.returncode == 0 and "OK" in done.stdout

    def wait_healthy(self, timeout: float = 30.0, names: Sequence[str] | None = None) -> float:
        """Until every running member (or members `names`) is healthy; the seconds it took."""
        chosen = (
            list(names) if names is not None else [n for n, m in self.members.items() if m.running]
        )
        return wait_for(
            f"etcd members {chosen} healthy",
            lambda: all(self.healthy(n) for n in chosen),
            timeout,
            self.explain,
            interval=0.2,
        )

    def explain(self) -> str:
        """Every member's state and log tail, for failure messages."""
        return "\n".join(m.log() for m in self.members.values())


@contextlib.contextmanager
def lab_etcd(
    lab: Lab, tmp: Path, names: Sequence[str] = MEMBERS, ready_timeout: float = 30.0
) -> Iterator[LabEtcd]:
    """Add one host per member, start every member, wait until the cluster is healthy;
    every member is killed on exit."""
    members = {name: EtcdMember(name, lab.add_host(name), tmp / f"etcd-{name}") for name in names}
    cluster = LabEtcd(lab, members, token=f"{lab.tag}-{int(time.time())}")
    try:
        for name in names:
            cluster.start(name)
        cluster.wait_healthy(ready_timeout)
        yield cluster
    finally:
        cluster.close()
