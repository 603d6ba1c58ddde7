"""A highly available control plane in a lab: a 3-member etcd cluster, three controllers
sharing it, and three edge-nodes, each in its own host (network namespace).

The controllers run `edgectl controller --store etcd://…` with their API on their host's
lab address: TLS with client certificates from the cluster CA. The test process, joined
to the lab bridge, calls them with the admin certificate each controller writes for its
operator (`DATA_DIR/admin.conf`), and runs `edgectl --config` with it. Every controller
knows the nodes by their static lab addresses, so each can command them once it leads.
The nodes are those of `LabFleet` (llama.cpp with SmolLM2-135M, their gateways on their
lab addresses); `LabFleet`'s observers (node states, replicas, events, the nodes' own
reports) ask the controller in `focus`, normally the leader.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import grpc

from edgefleet.v1 import controller_pb2, controller_pb2_grpc, node_pb2
from edgefleet_common.grpc_transport import client_options
from edgefleet_common.pki import CONTROLLER_SERVER_NAME
from edgefleet_contract.wire import desired_to_proto
from node_agent.state_file import StateFile
from orchestrator.cli.client_config import ClientConfig, ConfigError, load_client_config
from orchestrator.trust.admin_certs import LOCAL_ADMIN_CONFIG
from tests.cluster_pki import seed_controller
from tests.conftest import REPO
from tests.e2e.control_plane import stub_as
from tests.e2e.etcd_lab import LabEtcd
from tests.e2e.lab_fleet import ALIAS, MANIFEST, NODE_PORT, NODES, LabFleet
from tests.integration.controller_process import ControllerProcess, edgectl, smollm2_catalog
from tests.integration.node_process import environment
from tests.netlab import Host, Lab
from tests.polling import wait_for

CONTROLLERS = ("c1", "c2", "c3")
API_PORT = 7440
LEASE_TTL_S = 3
DEPLOYMENT = "lab-fleet"
CALL_TIMEOUT_S = 10.0


@dataclass(kw_only=True)
class HaFleet(LabFleet):
    """`LabFleet` with three controllers on an etcd cluster instead of one on SQLite.

    `controller` (and so `api`) is the controller named by `focus`; `wait_leader` moves
    the focus to the leader.
    """

    etcd: LabEtcd
    controller_hosts: dict[str, Host]
    controllers: dict[str, ControllerProcess] = field(default_factory=dict)
    focus: str = CONTROLLERS[0]
    _stubs: dict[str, tuple[grpc.Channel, controller_pb2_grpc.ControllerServiceStub]] = field(
        default_factory=dict
    )

    # -- controllers -------------------------------------------------------------------------

    def address(self, name: str) -> str:
        """`HOST:PORT` of controller `name`'s API."""
        return f"{self.controller_hosts[name].ip}:{API_PORT}"

    def start_controller(self, name: str, timeout: float = 60.0) -> ControllerProcess:
        """Start (or restart, same data folder) controller `name`; returns once it answers
        a status call with its admin certificate."""
        self._drop(name)
        old = self.controllers.get(name)
        if old is not None:
            old.close()
        self.controllers[name] = launch_controller(
            self.controller_hosts[name], self.tmp / f"controller-{name}", self.etcd, self.hosts
        )
        if name == self.focus:
            self.controller = self.controllers[name]
        self.wait_answering(name, timeout)
        return self.controllers[name]

    def wait_answering(self, name: str, timeout: float = 60.0) -> None:
        """Until controller `name` answers a status call with its admin certificate."""
        started = self.controllers[name]

        def answering() -> bool:
            if started.process.poll() is not None:
                raise AssertionError(f"controller {name} exited\n{started.log(40)}")
            return self.status(name) is not None

        wait_for(
            f"controller {name} answering its status",
            answering,
            timeout,
            lambda: started.log(40),
            interval=0.2,
        )

    def kill_controller(self, name: str | None = None) -> None:
        """SIGKILL controller `name` (default: the one in focus), as a power cut would."""
        chosen = name or self.focus
        self._drop(chosen)
        self.controllers[chosen].kill()

    def restart_controller(self, name: str | None = None) -> ControllerProcess:
        """Start controller `name` (default: the one in focus) again, same data folder."""
        return self.start_controller(name or self.focus)

    def alive(self) -> list[str]:
        """The controllers whose process runs."""
        return [n for n, c in self.controllers.items() if c.process.poll() is None]

    # -- talking to controllers --------------------------------------------------------------

    def admin_config(self, name: str) -> ClientConfig:
        """The admin configuration controller `name` wrote for its operator."""
        return load_client_config(self.tmp / f"controller-{name}" / LOCAL_ADMIN_CONFIG)

    def api_of(self, name: str) -> controller_pb2_grpc.ControllerServiceStub:
        """A stub on controller `name`'s API (mutual TLS with its admin certificate)."""
        if name not in self._stubs:
            conf = self.admin_config(name)
            credentials = grpc.ssl_channel_credentials(
                root_certificates=conf.ca_pem,
                private_key=conf.key_pem,
                certificate_chain=conf.cert_pem,
            )
            options = [
                *client_options(),
                ("grpc.ssl_target_name_override", CONTROLLER_SERVER_NAME),
            ]
            channel = grpc.secure_channel(self.address(name), credentials, options)
            self._stubs[name] = channel, controller_pb2_grpc.ControllerServiceStub(channel)
        return self._stubs[name][1]

    @property
    def api(self) -> controller_pb2_grpc.ControllerServiceStub:
        """A stub on the controller in focus."""
        return self.api_of(self.focus)

    def _drop(self, name: str) -> None:
        found = self._stubs.pop(name, None)
        if found is not None:
            found[0].close()

    def status(self, name: str) -> controller_pb2.ClusterStatus | None:
        """Controller `name`'s status, or None when it does not answer."""
        try:
            reply: controller_pb2.ClusterStatus = self.api_of(name).GetStatus(
                controller_pb2.GetStatusRequest(events=1), timeout=CALL_TIMEOUT_S
            )
        except (grpc.RpcError, ConfigError):
            return None
        return reply

    def control_plane(self, name: str) -> controller_pb2.ControlPlane | None:
        """Who decides, as controller `name` sees it (None when it does not answer)."""
        status = self.status(name)
        return status.control_plane if status is not None else None

    def term(self, name: str) -> int:
        """The leader term controller `name` knows (it must answer)."""
        view = self.control_plane(name)
        assert view is not None, f"controller {name} does not answer\n{self.explain()}"
        return int(view.term)

    def views(self) -> dict[str, controller_pb2.ControlPlane]:
        """Every running controller's view of the control plane (those that answer)."""
        found = {n: self.control_plane(n) for n in self.alive()}
        return {n: view for n, view in found.items() if view is not None}

    def leader(self) -> str | None:
        """The controller that says it leads (with the highest term if more than one still
        says so), or None."""
        claims = {n: v.term for n, v in self.views().items() if v.role == "leader"}
        return max(claims, key=lambda n: claims[n]) if claims else None

    def wait_leader(self, timeout: float = 30.0, exclude: tuple[str, ...] = ()) -> float:
        """Until one controller not in `exclude` leads and no other one claims to; focus on
        it. Returns the seconds it took."""
        found: list[str] = []

        def one_leader() -> bool:
            claims = [n for n, v in self.views().items() if v.role == "leader"]
            found[:] = claims
            return len(claims) == 1 and claims[0] not in exclude

        took = wait_for("one leader", one_leader, timeout, self.explain, interval=0.1)
        self.focus = found[0]
        self.controller = self.controllers[self.focus]
        return took

    def wait_stepped_down(self, name: str, timeout: float) -> tuple[float, float]:
        """Until controller `name` no longer says it leads. Returns when it stopped, in
        seconds from now, as bounds: the last status call that still said "leader" was sent
        at the first, the first that said otherwise was answered at the second (a call to
        a controller cut from etcd can take a while)."""
        begun = time.monotonic()
        bounds = [0.0, 0.0]

        def stepped_down() -> bool:
            sent = time.monotonic() - begun
            view = self.control_plane(name)
            if view is not None and view.role == "leader":
                bounds[0] = sent
                return False
            bounds[1] = time.monotonic() - begun
            return view is not None

        wait_for(f"{name} no longer says it leads", stepped_down, timeout, self.explain)
        return bounds[0], bounds[1]

    def edgectl(
        self, name: str, *args: str, timeout: float = 60.0, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """`edgectl --config CONF ARGS…` against controller `name` only."""
        path = self.tmp / f"edgectl-{name}.conf"
        replace(self.admin_config(name), controllers=(self.address(name),)).write(path)
        done = edgectl("--config", str(path), *args, timeout=timeout)
        if check:
            assert done.returncode == 0, (
                f"$ edgectl {' '.join(args)} (on {name})\nexit {done.returncode}\n"
                f"{done.stdout}\n{done.stderr}\n{self.controllers[name].log(40)}"
            )
        return done

    def api_key(self, description: str = "lab traffic") -> str:
        """A new gateway API key, made with `edgectl apikey create` on the leader."""
        return self.edgectl(
            self.focus, "apikey", "create", "--description", description
        ).stdout.strip()

    def revisions(self, name: str | None = None) -> list[controller_pb2.Revision]:
        """The deployment's stored revisions, oldest first, as controller `name` (default:
        focus) lists them."""
        reply = self.api_of(name or self.focus).ListRevisions(
            controller_pb2.ListRevisionsRequest(deployment=DEPLOYMENT, with_manifest=True),
            timeout=10,
        )
        return sorted(reply.revisions, key=lambda r: r.number)

    # -- faults ------------------------------------------------------------------------------

    def partition_from_etcd(self, name: str) -> None:
        """Cut controller `name` from every etcd member (both ways); the nodes, the other
        controllers and the test still reach it."""
        for address in self.etcd.addresses:
            self.controller_hosts[name].cut_from(address)

    def heal(self) -> None:
        """Remove every cut made on the controllers' hosts."""
        for host in self.controller_hosts.values():
            host.heal_cuts()

    def replay_push(self, controller: str, node: str, term: int) -> node_pb2.ApplyStateResponse:
        """Push node `node`'s own saved desired state again (one generation later) as
        controller `controller` with leader term `term`, with that controller's client
        certificate: what a deposed leader that still runs would do."""
        saved = StateFile(self.nodes[node].data_dir).load()
        assert saved is not None, f"{node} has no saved desired state"
        request = desired_to_proto(saved.model_copy(update={"generation": saved.generation + 1}))
        status = self.status(controller)
        request.controller_id = status.controller_id if status is not None else controller
        request.leader_term = term
        pki = self.tmp / f"controller-{controller}" / "pki"
        key, cert = (pki / "controller.key").read_bytes(), (pki / "controller.crt").read_bytes()
        with stub_as(node, self.nodes[node].address, key, cert) as stub:
            reply: node_pb2.ApplyStateResponse = stub.ApplyState(request, timeout=10)
            return reply

    # -- reporting ---------------------------------------------------------------------------

    def said(self, name: str) -> str:
        """Controller `name`'s view of the control plane on one line."""
        view = self.control_plane(name)
        if view is None:
            return "no answer"
        return (
            f"role={view.role} term={view.term} leader={view.leader_id} "
            f"writable={view.writable} detail={view.store_detail!r}"
        )

    def explain(self) -> str:
        """Each controller's view and log tail, the fleet as the focus sees it, and etcd."""
        lines = []
        for name in self.controllers:
            lines.append(f"{name} ({self.address(name)}): {self.said(name)}")
        lines.append(super().explain())
        for name in self.controllers:
            if name != self.focus:
                lines.append(self.controllers[name].log(15))
        lines.append(self.etcd.explain())
        return "\n".join(lines)

    def close(self) -> None:
        """Stop every controller and node this fleet started."""
        for name in list(self._stubs):
            self._drop(name)
        for controller in self.controllers.values():
            controller.close()
        for node in self.nodes.values():
            node.close()


def launch_controller(
    host: Host, data_dir: Path, etcd: LabEtcd, nodes: Mapping[str, Host]
) -> ControllerProcess:
    """Start `edgectl controller` on `host` with the etcd store, its API on the host's lab
    address and every node at its static address; does not wait for it."""
    seed_controller(data_dir)
    address = f"{host.ip}:{API_PORT}"
    argv = [
        sys.executable, "-m", "orchestrator.cli.main", "controller",
        "--store", etcd.endpoints(),
        "--lease-ttl", str(LEASE_TTL_S),
        "--listen", address,
        "--data-dir", str(data_dir),
        "--gateway-listen", "off",
        "--join-listen", "off",
        "--no-mdns",
        "--log-format", "json",
    ]  # fmt: skip
    for node, node_host in sorted(nodes.items()):
        argv += ["--node", f"{node}={node_host.ip}:{NODE_PORT}"]
    process = host.popen(
        argv, label=f"controller {host.name}", cwd=REPO, env=environment(), stdin=subprocess.DEVNULL
    )
    return ControllerProcess(data_dir, argv, address, process)


@contextlib.contextmanager
def ha_fleet(lab: Lab, tmp: Path, etcd: LabEtcd) -> Iterator[HaFleet]:
    """Three controllers on `etcd` and three nodes, each in its own host; `MANIFEST`
    applied on the leader and the agent ready on n1 and n2. Everything is stopped on exit."""
    hosts = {name: lab.add_host(name) for name in NODES}
    controller_hosts = {name: lab.add_host(name) for name in CONTROLLERS}
    controllers = {
        name: launch_controller(host, tmp / f"controller-{name}", etcd, hosts)
        for name, host in controller_hosts.items()
    }
    fleet = HaFleet(
        lab=lab,
        tmp=tmp,
        catalog=smollm2_catalog(tmp / "catalog.yaml", [ALIAS]),
        controller=controllers[CONTROLLERS[0]],
        hosts=hosts,
        etcd=etcd,
        controller_hosts=controller_hosts,
        controllers=controllers,
    )
    try:
        _start_all(fleet)
        fleet.wait_leader()
        wait_for(
            "all three nodes ready as the leader sees them",
            lambda: all(fleet.node_states().get(n) == "ready" for n in NODES),
            60,
            fleet.explain,
        )
        manifest = tmp / "lab-fleet.yaml"
        manifest.write_text(MANIFEST)
        fleet.edgectl(
            fleet.focus, "apply", "-f", str(manifest), "--wait", "--timeout", "180", timeout=200
        )
        wait_for(
            "the agent ready on its preferred nodes",
            lambda: fleet.ready_on() == {"n1", "n2"},
            60,
            fleet.explain,
        )
        yield fleet
    finally:
        fleet.close()


def _start_all(fleet: HaFleet) -> None:
    """Wait for the launched controllers and start the nodes, in parallel; fails naming
    what did not start."""
    errors: list[str] = []

    def attempt(step: Callable[[str], object], name: str) -> None:
        try:
            step(name)
        except (AssertionError, OSError, RuntimeError) as exc:
            errors.append(f"{name}: {exc}")

    starters = [
        threading.Thread(target=attempt, args=(fleet.wait_answering, n)) for n in CONTROLLERS
    ] + [threading.Thread(target=attempt, args=(fleet.start_node, n)) for n in NODES]
    begun = time.monotonic()
    for thread in starters:
        thread.start()
    for thread in starters:
        thread.join()
    assert not errors, "\n".join(errors)
    print(f"\ncontrollers and nodes up in {time.monotonic() - begun:.1f}s")
