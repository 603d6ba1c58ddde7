"""The controller API off loopback, end to end: a real controller listening on every
interface (reached on 127.0.0.1 only), edgectl with and without admin certificates,
`edgectl admin create|list|revoke`, and a revocation seen within a couple of seconds."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from edgefleet.v1 import controller_pb2, controller_pb2_grpc
from edgefleet_common.grpc_transport import client_options
from edgefleet_common.pki import CONTROLLER_SERVER_NAME, Credentials
from edgefleet_common.ports import free_port
from tests.cluster_pki import seed_controller, seed_node
from tests.conftest import REPO
from tests.integration.controller_process import describe, edgectl
from tests.integration.node_process import environment
from tests.netlab import Proc

pytestmark = pytest.mark.slow


class OffLoopback:
    """A controller whose API listens on 0.0.0.0 (off loopback), reached on 127.0.0.1."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        seed_controller(data_dir)
        argv = [
            sys.executable, "-m", "orchestrator.cli.main", "controller",
            "--listen", f"0.0.0.0:{self.port}",
            "--data-dir", str(data_dir),
            "--gateway-listen", "off",
            "--join-listen", f"127.0.0.1:{free_port()}",
            "--no-mdns",
            "--log-format", "json",
        ]  # fmt: skip
        self.process = Proc(
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

    @property
    def admin_conf(self) -> Path:
        return self.data_dir / "admin.conf"

    def log(self) -> str:
        return f"controller log:\n{self.process.tail(60)}"

    def wait_serving(self, timeout: float = 30.0) -> None:
        """Until the local admin config exists and `status` answers with it."""
        deadline = time.monotonic() + timeout
        last = "admin.conf not written yet"
        while time.monotonic() < deadline and self.process.poll() is None:
            if self.admin_conf.exists():
                done = edgectl("--config", str(self.admin_conf), "status", timeout=30)
                if done.returncode == 0:
                    return
                last = describe(done)
            time.sleep(0.1)
        raise AssertionError(f"controller not serving within {timeout:.0f}s ({last})\n{self.log()}")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture(scope="module")
def controller(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OffLoopback]:
    started = OffLoopback(tmp_path_factory.mktemp("controller"))
    try:
        started.wait_serving()
        yield started
    finally:
        started.close()


def status_with(credentials: Credentials, address: str) -> grpc.RpcError | None:
    """GetStatus over TLS with `credentials`; the error, or None when it was served."""
    channel_credentials = grpc.ssl_channel_credentials(
        root_certificates=credentials.ca_pem,
        private_key=credentials.key_pem,
        certificate_chain=credentials.cert_pem,
    )
    options = [*client_options(), ("grpc.ssl_target_name_override", CONTROLLER_SERVER_NAME)]
    with grpc.secure_channel(address, channel_credentials, options=options) as channel:
        stub = controller_pb2_grpc.ControllerServiceStub(channel)
        try:
            stub.GetStatus(controller_pb2.GetStatusRequest(), timeout=10)
        except grpc.RpcError as exc:
            return exc
    return None


def test_plaintext_without_a_certificate_is_not_served_and_says_what_to_do(
    controller: OffLoopback,
) -> None:
    done = edgectl("--controller", controller.address, "status", timeout=30)
    assert done.returncode == 3, describe(done)
    assert "takes TLS with an admin certificate: `edgectl --config FILE`" in done.stderr
    assert "admin create NAME" in done.stderr


def test_a_node_certificate_is_refused_with_the_way_to_an_admin_one(
    controller: OffLoopback, tmp_path: Path
) -> None:
    seed_node(tmp_path, "edge-9")
    node = Credentials.load(tmp_path / "pki", "node")
    assert node is not None
    refused = status_with(node, controller.address)
    assert refused is not None
    assert refused.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "node `edge-9` may not drive the controller API" in str(refused.details())
    assert "admin create NAME" in str(refused.details())


def test_status_shows_the_control_plane(controller: OffLoopback) -> None:
    done = edgectl("--config", str(controller.admin_conf), "status", timeout=30)
    assert done.returncode == 0, describe(done)
    assert "Control plane: single" in done.stdout
    assert "store sqlite, writable" in done.stdout


def test_admin_create_list_revoke_end_to_end(controller: OffLoopback, tmp_path: Path) -> None:
    local = str(controller.admin_conf)
    path = tmp_path / "ops.yaml"
    done = edgectl("--config", local, "admin", "create", "ops", "-o", str(path), timeout=30)
    assert done.returncode == 0, describe(done)
    served = edgectl("--config", str(path), "get", "nodes", timeout=30)
    assert served.returncode == 0, describe(served)
    listed = edgectl("--config", str(path), "admin", "list", timeout=30)
    assert listed.returncode == 0, describe(listed)
    names = [line.split()[0] for line in listed.stdout.splitlines()[1:] if line.strip()]
    assert "ops" in names
    assert any(name.startswith("local-") for name in names)
    revoked = edgectl("--config", local, "admin", "revoke", "ops", timeout=30)
    assert revoked.returncode == 0, describe(revoked)
    assert revoked.stdout == "admin ops: 1 certificate(s) revoked\n"
    deadline = time.monotonic() + 10.0
    last = served
    while time.monotonic() < deadline:
        last = edgectl("--config", str(path), "get", "nodes", timeout=30)
        if last.returncode != 0:
            break
        time.sleep(0.2)
    assert last.returncode == 1, "a revoked admin was still served after 10 s\n" + describe(last)
    assert "admin certificate of ops" in last.stderr
    assert "is revoked" in last.stderr
    # The local admin still works.
    still = edgectl("--config", local, "admin", "list", timeout=30)
    assert still.returncode == 0, describe(still)
