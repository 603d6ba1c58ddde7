"""Real etcd servers for tests: one member, or a three-member cluster on loopback.

`EtcdCluster.start(base, size)` runs `/usr/bin/etcd` (Debian's etcd-server, installed by
scripts/setup) with a data folder under `base` and free loopback ports, and returns
once every member answers with a leader. A member can be stopped (SIGTERM), killed
(SIGKILL) and started again on the same data, for outage and quorum tests.

Fixtures: `etcd` (one member for the whole module: use your own key prefix per test),
`etcd_fresh` (one member per test, for tests that stop it), `etcd_cluster` (three
members per test), `etcd_tls` (one member that requires client certificates),
`etcd_client` (an EtcdClient to `etcd`). They skip with the reason
when etcd is not installed. tests/conftest.py registers this module as a plugin.
`python -m tests.etcd_server ENDPOINTS KEY IDENTITY TTL` runs a leader election
candidate in a process of its own (for tests that kill a leader).
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edgefleet_common.ports import free_port
from orchestrator.etcd.client import EtcdClient
from orchestrator.etcd.errors import EtcdError
from orchestrator.etcd.target import EtcdTarget

ETCD_BINARY = "/usr/bin/etcd"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


def etcd_binary() -> str | None:
    """The etcd server to run: Debian's, else one on PATH; None when there is none."""
    if os.access(ETCD_BINARY, os.X_OK):
        return ETCD_BINARY
    return shutil.which("etcd")


def skip_without_etcd() -> str:
    """The etcd binary, or skip the test saying how to get it."""
    binary = etcd_binary()
    if binary is None:
        pytest.skip("etcd is not installed: run scripts/setup as root (Debian etcd-server)")
    return binary


@dataclass(frozen=True)
class EtcdTls:
    """PEM files for an etcd that serves TLS and requires client certificates from `ca`."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


@dataclass
class EtcdMember:
    """One etcd server process: its addresses, data folder and log."""

    binary: str
    name: str
    host: str
    client_port: int
    peer_port: int
    data_dir: Path
    initial_cluster: str = ""
    tls: EtcdTls | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def endpoint(self) -> str:
        """`HOST:PORT` clients use."""
        return f"{self.host}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.host}:{self.peer_port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / f"{self.name}.log"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Start the server (on its existing data, if any); does not wait for it."""
        assert not self.running, f"etcd member {self.name} is already running"
        client_url = f"{'https' if self.tls else 'http'}://{self.endpoint}"
        argv = [
            self.binary,
            f"--name={self.name}",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={client_url}",
            f"--advertise-client-urls={client_url}",
            f"--listen-peer-urls={self.peer_url}",
            f"--initial-advertise-peer-urls={self.peer_url}",
            f"--initial-cluster={self.initial_cluster}",
            "--initial-cluster-state=new",
            f"--initial-cluster-token=test-{self.data_dir.parent.name}",
            "--logger=zap",
            "--log-outputs=stderr",
        ]
        if self.tls is not None:
            argv += [
                f"--cert-file={self.tls.server_cert}",
                f"--key-file={self.tls.server_key}",
                f"--trusted-ca-file={self.tls.ca}",
                "--client-cert-auth",
            ]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited in time."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL, as a power cut would."""
        self._end(signal.SIGKILL)

    def _end(self, how: signal.Signals) -> None:
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(how)
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(STOP_TIMEOUT)
        self.process = None

    def log_tail(self, lines: int = 20) -> str:
        """The member's last log lines, for failure messages."""
        try:
            text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return f"  {self.name}: (no log)"
        return "\n".join(f"  {self.name} | {line}" for line in text)


@dataclass
class EtcdCluster:
    """Members started together; `target` points a client at all of them."""

    members: list[EtcdMember]
    tls: EtcdTls | None = None

    @classmethod
    def start(cls, base: Path, size: int = 1, tls: EtcdTls | None = None) -> EtcdCluster:
        """Start `size` members (127.0.0.1, or 127.0.0.11... for a cluster), wait for a leader.

        With `tls`, clients talk TLS and must present a certificate (peers stay plain)."""
        binary = skip_without_etcd()
        base.mkdir(parents=True, exist_ok=True)
        hosts = ["127.0.0.1"] if size == 1 else [f"127.0.0.{11 + i}" for i in range(size)]
        members = [
            EtcdMember(
                binary=binary,
                name=f"m{i}",
                host=host,
                client_port=free_port(host),
                peer_port=free_port(host),
                data_dir=base / f"m{i}.etcd",
                tls=tls,
            )
            for i, host in enumerate(hosts)
        ]
        initial = ",".join(f"{m.name}={m.peer_url}" for m in members)
        cluster = cls(members, tls)
        for member in members:
            member.initial_cluster = initial
            member.start()
        try:
            cluster.wait_ready()
        except BaseException:
            cluster.stop()
            raise
        return cluster

    @property
    def endpoints(self) -> tuple[str, ...]:
        return tuple(m.endpoint for m in self.members)

    @property
    def url(self) -> str:
        """`etcd://H1:P1,H2:P2,...` as the controller's --store takes it."""
        return "etcd://" + ",".join(self.endpoints)

    def target(self) -> EtcdTarget:
        if self.tls is None:
            return EtcdTarget(endpoints=self.endpoints)
        tls = self.tls
        return EtcdTarget(self.endpoints, ca=tls.ca, cert=tls.client_cert, key=tls.client_key)

    def client(self, timeout: float = 2.0) -> EtcdClient:
        """A new client to every member (close it when done)."""
        return EtcdClient(self.target(), timeout=timeout)

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Until every running member answers and a leader is elected."""
        running = [m for m in self.members if m.running]
        everyone = self.target()
        endpoints = tuple(m.endpoint for m in running)
        probe = EtcdClient(
            EtcdTarget(endpoints, everyone.ca, everyone.cert, everyone.key), timeout=1.0
        )
        deadline = time.monotonic() + timeout
        last = ""
        try:
            while True:
                exited = [m.name for m in running if not m.running]
                if exited:
                    raise AssertionError(f"etcd {exited} exited at start\n{self.logs()}")
                try:
                    status = probe.status()
                    if status.leader and status.reachable == len(running):
                        probe.get(b"\0ready")  # a linearizable read: the quorum serves
                        return
                    last = f"{status}"
                except EtcdError as error:
                    last = str(error)
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"etcd did not become ready within {timeout:.0f}s: {last}\n{self.logs()}"
                    )
                time.sleep(0.05)
        finally:
            probe.close()

    def stop(self) -> None:
        """Stop every member (SIGTERM, then SIGKILL)."""
        for member in self.members:
            member.stop()

    def logs(self) -> str:
        return "\n".join(m.log_tail() for m in self.members)


Issuer = tuple[x509.Certificate, ec.EllipticCurvePrivateKey]


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def _issue(
    subject: str, issuer: Issuer | None, usage: ExtendedKeyUsageOID | None
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    signer_cert, signer_key = issuer if issuer else (None, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(signer_cert.subject if signer_cert else _name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if usage == ExtendedKeyUsageOID.SERVER_AUTH:
        san = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return builder.sign(signer_key, hashes.SHA256()), key


def make_tls(folder: Path) -> EtcdTls:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files."""
    ca = _issue("test etcd CA", None, None)
    server = _issue("etcd", ca, ExtendedKeyUsageOID.SERVER_AUTH)
    client = _issue("controller", ca, ExtendedKeyUsageOID.CLIENT_AUTH)
    pem = serialization.Encoding.PEM
    (folder / "ca.pem").write_bytes(ca[0].public_bytes(pem))
    (folder / "server.pem").write_bytes(server[0].public_bytes(pem))
    (folder / "client.pem").write_bytes(client[0].public_bytes(pem))
    return EtcdTls(
        ca=folder / "ca.pem",
        server_cert=folder / "server.pem",
        server_key=_write_key(folder / "server.key", server[1]),
        client_cert=folder / "client.pem",
        client_key=_write_key(folder / "client.key", client[1]),
    )


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    """One etcd member for the whole test module (give each test its own key prefix)."""
    cluster = EtcdCluster.start(tmp_path_factory.mktemp("etcd"))
    yield cluster
    cluster.stop()


@pytest.fixture
def etcd_fresh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    """One etcd member for this test alone (it may stop, kill or restart it)."""
    cluster = EtcdCluster.start(tmp_path_factory.mktemp("etcd"))
    yield cluster
    cluster.stop()


@pytest.fixture
def etcd_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    """Three etcd members (127.0.0.11-13) for this test alone."""
    cluster = EtcdCluster.start(tmp_path_factory.mktemp("etcd"), size=3)
    yield cluster
    cluster.stop()


@pytest.fixture
def etcd_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    """One etcd member serving TLS that requires client certificates (`cluster.tls`)."""
    base = tmp_path_factory.mktemp("etcd-tls")
    cluster = EtcdCluster.start(base, tls=make_tls(base))
    yield cluster
    cluster.stop()


@pytest.fixture
def etcd_client(etcd: EtcdCluster) -> Iterator[EtcdClient]:
    """A client to the module's etcd member, closed after the test."""
    client = etcd.client()
    yield client
    with contextlib.suppress(Exception):
        client.close()


def run_candidate(endpoints: str, key: str, identity: str, ttl: int) -> None:
    """Campaign in this process and print `state ROLE TERM` on each change, until killed."""
    from orchestrator.etcd.election import LeaderElection, LeaderState

    def show(state: LeaderState) -> None:
        print(f"state {state.role} {state.term}", flush=True)

    client = EtcdClient(EtcdTarget(tuple(endpoints.split(","))))
    election = LeaderElection(client, key.encode(), identity.encode(), ttl=ttl, on_change=show)
    election.start()
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    election.close()
    client.close()


if __name__ == "__main__":
    import sys

    # python -m tests.etcd_server ENDPOINTS KEY IDENTITY TTL: a candidate in its own process
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    run_candidate(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
