"""How fast a fleet notices a lost node and serves again: a benchmark, not a test.

    python bench/failover.py [--reps 5] [--faults sigkill,partition,leader-loss]

Needs root and `ip netns` (the network-namespace lab of the fault tests) and the
llama.cpp runtime with SmolLM2-135M. Three real edge-nodes, each in its own
namespace; the controller finds them over mDNS across the lab bridge; steady
traffic through the gateway with the `openai` client (an agent request and a
streamed model request every 0.5 s). The agent `desk` has two replicas,
preferred on n1 and n2; n3 has the model loaded and room.

Per repetition, for each fault, side by side in one run:

* `sigkill` — SIGKILL the edge-node daemon on n1 (its model server dies with it),
  then restart it;
* `partition` — `ip link set … down` on n2's link, healed once the agent has
  recovered elsewhere plus 2 s.

Figures, all from the controller's own event times (wall clock, same machine)
against the moment the fault was made:

* detected — the first `NodeSuspect` or `NodeNotReady` for the node;
* not-ready — `NodeNotReady` (the node is declared failed; failover starts);
* recovered — the agent's replacement replica `AgentReady` on n3 (back to the
  desired 2 replicas on healthy nodes);
* failed requests — requests that ended in an error between the fault and the
  end of failback, split into retriable (should be 0) and streams cut mid-answer.

And in a second lab, a highly available control plane: a 3-member etcd cluster,
three controllers sharing it (`--store etcd://…`, lease TTL 3 s) and the same
three nodes, each in its own namespace; steady traffic through n3's own gateway
(HTTPS, an API key; n3 hosts no replica of the agent):

* `leader-loss` — SIGKILL the leading controller, then start it again (a standby).

Figures, from this process's clock against the moment of the kill:

* new leader — the first surviving controller whose status says it leads with a
  higher term than the killed one's (controllers polled every 50 ms);
* reconciled — the new leader sees every node ready, running the generation it
  last sent and routing with its current table, the agent ready on n1 and n2, and
  every node itself reports the new leader's term;
* failed requests — as above, from the kill until 2 s after reconciled; plus the
  models or agents restarted (the nodes' own llama.cpp pids and request counters)
  and the events that started, stopped or replaced work (both should be 0).

Results go to bench/results/failover.json; min/median/max over the repetitions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgefleet.v1 import common_pb2, controller_pb2  # noqa: E402
from tests.e2e.control_plane import (  # noqa: E402
    RESTART_REASONS,
    Fingerprint,
    fingerprints,
    holders,
    routes_current,
    wait_key_in_force,
)
from tests.e2e.etcd_lab import etcd_available, lab_etcd  # noqa: E402
from tests.e2e.gateway_tls import node_gateway_client  # noqa: E402
from tests.e2e.ha_fleet import CONTROLLERS, LEASE_TTL_S, HaFleet, ha_fleet  # noqa: E402
from tests.e2e.lab_fleet import NODES, LabFleet, Traffic, failures, lab_fleet  # noqa: E402
from tests.netlab import Lab, lab_available  # noqa: E402
from tests.polling import wait_for  # noqa: E402

RESULTS = REPO / "bench" / "results" / "failover.json"
PREFERRED = {"n1", "n2"}
FAULT_NODE = {"sigkill": "n1", "partition": "n2"}
FAULTS = ("sigkill", "partition", "leader-loss")
GATEWAY_NODE = "n3"
"""Leader loss: the node whose gateway the traffic goes through (it hosts no replica)."""


def _seconds(stamp: Any) -> float:
    return float(stamp.seconds + stamp.nanos / 1e9)


def first_event(fleet: LabFleet, after: int, reasons: set[str], node: str) -> float | None:
    """Wall-clock time of the first event after id `after` with one of `reasons` for `node`
    (`node` is the node id, or for agent events the node named in the message)."""
    for event in fleet.events(after):
        if event.reason in reasons and (event.node_id == node or f" on {node}" in event.message):
            return _seconds(event.time)
    return None


def make_fault(fleet: LabFleet, kind: str) -> None:
    node = FAULT_NODE[kind]
    if kind == "sigkill":
        fleet.kill(node)
    else:
        fleet.hosts[node].link_down()


def heal(fleet: LabFleet, kind: str) -> None:
    node = FAULT_NODE[kind]
    if kind == "sigkill":
        fleet.start_node(node)
    else:
        fleet.hosts[node].link_up()


def one_fault(fleet: LabFleet, kind: str) -> dict[str, float | int]:
    """Make the fault, measure, heal, and wait for failback to the preferred nodes."""
    node = FAULT_NODE[kind]
    wait_for("steady state", lambda: fleet.ready_on() == PREFERRED, 90, fleet.explain)
    after = fleet.last_event_id()
    with Traffic(fleet.controller.gateway_url, max_seconds=180) as traffic:
        time.sleep(2.0)  # traffic flowing to both replicas before the fault
        fault_at = time.time()
        make_fault(fleet, kind)
        survivor = (PREFERRED - {node}) | {"n3"}
        try:
            wait_for("recovered", lambda: fleet.ready_on() == survivor, 60, fleet.explain)
            time.sleep(2.0)
        finally:
            heal(fleet, kind)
        wait_for(
            "failback",
            lambda: fleet.ready_on() == PREFERRED and fleet.reported_holders() == PREFERRED,
            120,
            fleet.explain,
        )
        time.sleep(1.0)
    outcomes = traffic.stop()
    detected = first_event(fleet, after, {"NodeSuspect", "NodeNotReady"}, node)
    not_ready = first_event(fleet, after, {"NodeNotReady"}, node)
    recovered = first_event(fleet, after, {"AgentReady"}, "n3")
    if detected is None or not_ready is None or recovered is None:
        raise RuntimeError(f"missing events for {kind}\n{fleet.explain()}")
    during = [o for o in outcomes if o.ended >= fault_at]
    retriable, cut = failures(during)
    return {
        "detected_s": round(detected - fault_at, 3),
        "not_ready_s": round(not_ready - fault_at, 3),
        "recovered_s": round(recovered - fault_at, 3),
        "requests": len(during),
        "failed_retriable": len(retriable),
        "failed_cut_mid_stream": len(cut),
    }


# -- leader loss ----------------------------------------------------------------------------


def steady_ha(fleet: HaFleet) -> None:
    """Every controller running, one leader in focus, the agent on its preferred nodes as
    the leader and the nodes say, every node on the current table."""
    for name in sorted(set(CONTROLLERS) - set(fleet.alive())):
        fleet.start_controller(name)
    fleet.wait_leader()
    wait_for(
        "the agent on its preferred nodes, as the leader and the nodes report",
        lambda: fleet.ready_on() == PREFERRED and holders(fleet) == PREFERRED,
        120,
        fleet.explain,
    )
    wait_for("every node on the current table", lambda: routes_current(fleet), 60, fleet.explain)


def new_leader(fleet: HaFleet, killed: str, old_term: int) -> tuple[str, int] | None:
    """The surviving controller that says it leads with a term above `old_term`."""
    for name in fleet.alive():
        view = fleet.control_plane(name) if name != killed else None
        if view is not None and view.role == "leader" and view.term > old_term:
            return name, int(view.term)
    return None


def reconciled(fleet: HaFleet, term: int) -> bool:
    """The leader in focus sees every node ready, running the generation it last sent and
    on its current routing table, the agent ready on its preferred nodes; and every node
    itself reports leader term `term`."""
    try:
        nodes = fleet.api.ListNodes(controller_pb2.ListNodesRequest(), timeout=5).nodes
        if len(nodes) != len(NODES) or not all(
            n.state == common_pb2.NODE_STATE_READY and n.generation == n.observed_generation
            for n in nodes
        ):
            return False
        if fleet.ready_on() != PREFERRED or not routes_current(fleet):
            return False
        return all(fleet.node_status(n).leader_term == term for n in NODES)
    except grpc.RpcError:
        return False


def restarts(before: dict[str, Fingerprint], after: dict[str, Fingerprint]) -> int:
    """Model servers gone and agents whose request counter went back (or vanished)."""
    count = 0
    for name, (servers, counters) in before.items():
        now_servers, now_counters = after[name]
        count += len(servers - now_servers)
        count += sum(1 for agent, n in counters.items() if now_counters.get(agent, -1) < n)
    return count


def one_leader_loss(fleet: HaFleet, key: str) -> dict[str, float | int]:
    """SIGKILL the leader under traffic, measure the takeover, start the old one again."""
    steady_ha(fleet)
    old = fleet.focus
    view = fleet.control_plane(old)
    assert view is not None, f"the leader {old} does not answer\n{fleet.explain()}"
    old_term = int(view.term)
    with Traffic(
        fleet.node_gateway_url(GATEWAY_NODE),
        api_key=key,
        http_client=node_gateway_client(GATEWAY_NODE),
        max_seconds=180,
    ) as traffic:
        time.sleep(2.0)  # traffic flowing before the fault
        before = fingerprints(fleet)
        last_event = fleet.last_event_id()
        killed_wall, killed = time.time(), time.monotonic()
        fleet.kill_controller(old)
        found: list[tuple[str, int]] = []

        def elected() -> bool:
            hit = new_leader(fleet, old, old_term)
            if hit is not None:
                found.append(hit)
            return hit is not None

        wait_for("a new leader with a higher term", elected, 30, fleet.explain)
        to_leader = time.monotonic() - killed
        name, term = found[0]
        fleet.focus, fleet.controller = name, fleet.controllers[name]
        wait_for("the fleet reconciled", lambda: reconciled(fleet, term), 90, fleet.explain)
        to_reconciled = time.monotonic() - killed
        time.sleep(2.0)
    outcomes = traffic.stop()
    restarted = restarts(before, fingerprints(fleet))
    churn = [e for e in fleet.events(last_event) if e.reason in RESTART_REASONS]
    placed = holders(fleet)
    fleet.start_controller(old)
    during = [o for o in outcomes if o.ended >= killed_wall]
    retriable, cut = failures(during)
    return {
        "new_leader_s": round(to_leader, 3),
        "reconciled_s": round(to_reconciled, 3),
        "old_term": old_term,
        "new_term": term,
        "requests": len(during),
        "failed_retriable": len(retriable),
        "failed_cut_mid_stream": len(cut),
        "restarted": restarted,
        "churn_events": len(churn),
        "duplicate_or_lost_placements": len(placed ^ PREFERRED),
    }


def leader_loss_runs(reps: int, tmp: Path) -> list[dict[str, float | int]]:
    """`reps` leader losses in one HA lab."""
    runs: list[dict[str, float | int]] = []
    with Lab() as lab, lab_etcd(lab, tmp) as etcd, ha_fleet(lab, tmp, etcd) as fleet:
        key = fleet.api_key("failover benchmark")
        wait_key_in_force(fleet, key)
        for rep in range(reps):
            result = one_leader_loss(fleet, key)
            runs.append(result)
            print(f"leader-loss #{rep + 1}: {result}", flush=True)
    return runs


def spread(values: list[float]) -> dict[str, float]:
    return {
        "min": round(min(values), 3),
        "median": round(statistics.median(values), 3),
        "max": round(max(values), 3),
    }


def parse_faults(text: str) -> list[str]:
    """Faults to run, comma-separated, in the order given."""
    chosen = list(dict.fromkeys(f.strip() for f in text.split(",") if f.strip()))
    if not chosen or any(f not in FAULTS for f in chosen):
        raise argparse.ArgumentTypeError(
            f"`{text}`: give faults to run, comma-separated, of {', '.join(FAULTS)}"
        )
    return chosen


def node_fault_runs(kinds: list[str], reps: int, tmp: Path) -> dict[str, list[dict[str, Any]]]:
    """`reps` repetitions of each node fault in `kinds`, side by side in one lab."""
    runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
    with Lab() as lab, lab_fleet(lab, tmp) as fleet:
        for rep in range(reps):
            for kind in kinds:
                try:
                    result = one_fault(fleet, kind)
                except (AssertionError, RuntimeError, grpc.RpcError) as exc:
                    print(f"{kind} #{rep + 1} failed: {exc}", file=sys.stderr)
                    raise
                runs[kind].append(result)
                print(f"{kind:9} #{rep + 1}: {result}", flush=True)
    return runs


TIMES = {
    "sigkill": ("detected_s", "not_ready_s", "recovered_s"),
    "partition": ("detected_s", "not_ready_s", "recovered_s"),
    "leader-loss": ("new_leader_s", "reconciled_s"),
}
COUNTS = {
    "sigkill": ("requests", "failed_retriable", "failed_cut_mid_stream"),
    "partition": ("requests", "failed_retriable", "failed_cut_mid_stream"),
    "leader-loss": (
        "requests",
        "failed_retriable",
        "failed_cut_mid_stream",
        "restarted",
        "churn_events",
        "duplicate_or_lost_placements",
    ),
}


def summarize(runs: dict[str, list[dict[str, Any]]], reps: int) -> dict[str, Any]:
    """Per fault: min/median/max of its times, totals of its counts; printed as a table."""
    faults: dict[str, Any] = {}
    print(f"\n{'fault':12} {'figure':28} {'min':>8} {'median':>8} {'max':>8}")
    for kind, results in runs.items():
        figures: dict[str, Any] = {}
        for key in TIMES[kind]:
            figures[key] = spread([float(r[key]) for r in results])
            row = figures[key]
            print(f"{kind:12} {key:28} {row['min']:8.2f} {row['median']:8.2f} {row['max']:8.2f}")
        for key in COUNTS[kind]:
            figures[key] = sum(int(r[key]) for r in results)
            print(f"{kind:12} {key:28} {figures[key]:>8} (total over {reps} reps)")
        figures["runs"] = results
        faults[kind] = figures
    return faults


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5, help="repetitions of each fault")
    parser.add_argument(
        "--faults",
        type=parse_faults,
        default=list(FAULTS),
        help=f"faults to run, comma-separated (default all: {','.join(FAULTS)})",
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    for reason in (lab_available(), etcd_available() if "leader-loss" in args.faults else None):
        if reason is not None:
            print(f"cannot run: {reason}", file=sys.stderr)
            return 2
    node_faults = [kind for kind in args.faults if kind in FAULT_NODE]
    runs: dict[str, list[dict[str, Any]]] = {}
    if node_faults:
        with tempfile.TemporaryDirectory(prefix="edgefleet-failover-") as tmp:
            runs.update(node_fault_runs(node_faults, args.reps, Path(tmp)))
    if "leader-loss" in args.faults:
        with tempfile.TemporaryDirectory(prefix="edgefleet-leader-loss-") as tmp:
            runs["leader-loss"] = leader_loss_runs(args.reps, Path(tmp))
    report: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "setup": "3 edge-nodes in network namespaces, SmolLM2-135M on llama.cpp, "
        "heartbeat 1s, failure_timeout 3s, gRPC keepalive 1s/1s; leader-loss: 3 etcd "
        f"members and 3 controllers (lease TTL {LEASE_TTL_S}s) in namespaces too, traffic "
        f"through {GATEWAY_NODE}'s gateway",
        "reps": args.reps,
        "faults": summarize(runs, args.reps),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
