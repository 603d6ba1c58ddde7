"""How fast a fleet notices a lost node and serves again: a benchmark, not a test.

    python bench/failover.py [--reps 5]

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

from tests.e2e.lab_fleet import LabFleet, Traffic, failures, lab_fleet  # noqa: E402
from tests.netlab import Lab, lab_available  # noqa: E402
from tests.polling import wait_for  # noqa: E402

RESULTS = REPO / "bench" / "results" / "failover.json"
PREFERRED = {"n1", "n2"}
FAULT_NODE = {"sigkill": "n1", "partition": "n2"}


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


def spread(values: list[float]) -> dict[str, float]:
    return {
        "min": round(min(values), 3),
        "median": round(statistics.median(values), 3),
        "max": round(max(values), 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5, help="repetitions of each fault")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    reason = lab_available()
    if reason is not None:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    runs: dict[str, list[dict[str, float | int]]] = {"sigkill": [], "partition": []}
    with (
        tempfile.TemporaryDirectory(prefix="edgefleet-failover-") as tmp,
        Lab() as lab,
        lab_fleet(lab, Path(tmp)) as fleet,
    ):
        for rep in range(args.reps):
            for kind in runs:
                try:
                    result = one_fault(fleet, kind)
                except (AssertionError, RuntimeError, grpc.RpcError) as exc:
                    print(f"{kind} #{rep + 1} failed: {exc}", file=sys.stderr)
                    raise
                runs[kind].append(result)
                print(f"{kind:9} #{rep + 1}: {result}", flush=True)
    report: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "setup": "3 edge-nodes in network namespaces, SmolLM2-135M on llama.cpp, "
        "heartbeat 1s, failure_timeout 3s, gRPC keepalive 1s/1s",
        "reps": args.reps,
        "faults": {},
    }
    print(f"\n{'fault':10} {'figure':12} {'min':>8} {'median':>8} {'max':>8}")
    for kind, results in runs.items():
        figures: dict[str, Any] = {}
        for key in ("detected_s", "not_ready_s", "recovered_s"):
            figures[key] = spread([float(r[key]) for r in results])
            row = figures[key]
            print(f"{kind:10} {key:12} {row['min']:8.2f} {row['median']:8.2f} {row['max']:8.2f}")
        for key in ("requests", "failed_retriable", "failed_cut_mid_stream"):
            figures[key] = sum(int(r[key]) for r in results)
            print(f"{kind:10} {key:12} {figures[key]:>8} (total over {args.reps} reps)")
        figures["runs"] = results
        report["faults"][kind] = figures
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
