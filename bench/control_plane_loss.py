"""What clients see when the controller dies: a benchmark, not a test.

    python bench/control_plane_loss.py [--down 10] [--phase 15]

Needs root and `ip netns` (the network-namespace lab of the fault tests) and the
llama.cpp runtime with SmolLM2-135M. Three real edge-nodes, each in its own
namespace, found by the controller over mDNS across the lab bridge; the agent
`desk` has two replicas (n1, n2), n3 has the model loaded and serves its gateway on
its lab address (HTTPS, an API key from `edgectl apikey create`).

Side by side, steady bounded traffic with the `openai` client (an agent request and
a streamed model request every 0.5 s on each path) through

* `node` — n3's own gateway (agents on its peers, the model on itself), and
* `controller` — the controller's gateway,

for `--phase` seconds; then the controller is SIGKILLed and restarted `--down`
seconds later (same data folder, same addresses); the event ends once the
restarted controller sees the agent ready on n1 and n2 again; then `--phase`
seconds more. Figures per path: requests during the event, failed requests
(retriable; and streams cut mid-answer), the longest request during the event,
and p50/p99 latency of the successful requests before, during and after. The
controller's gateway is expected to fail while it is down: that is the comparison.

Results go to bench/results/control_plane_loss.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.e2e.control_plane import PREFERRED, wait_key_in_force  # noqa: E402
from tests.e2e.gateway_tls import node_gateway_client  # noqa: E402
from tests.e2e.lab_fleet import LabFleet, Outcome, Traffic, failures, lab_fleet  # noqa: E402
from tests.netlab import Lab, lab_available  # noqa: E402
from tests.polling import wait_for  # noqa: E402

RESULTS = REPO / "bench" / "results" / "control_plane_loss.json"
GATEWAY_NODE = "n3"
MAX_REQUESTS = 400
"""Per path and kind: a bound on the traffic, whatever the timings."""


def percentile(values: Sequence[float], share: float) -> float | None:
    """Nearest-rank percentile (None for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def latency(outcomes: Sequence[Outcome]) -> dict[str, float | int | None]:
    """p50/p99 of the successful requests, and how many there were."""
    took = [o.ended - o.started for o in outcomes if o.ok]
    return {
        "ok": len(took),
        "p50_ms": ms(percentile(took, 0.5)),
        "p99_ms": ms(percentile(took, 0.99)),
    }


def figures(outcomes: Sequence[Outcome], killed: float, back: float) -> dict[str, Any]:
    """One path's figures; a request belongs to the event if it overlapped it."""
    before = [o for o in outcomes if o.ended < killed]
    during = [o for o in outcomes if o.ended >= killed and o.started <= back]
    after = [o for o in outcomes if o.started > back]
    retriable, cut = failures(during)
    longest = max((o.ended - o.started for o in during), default=None)
    # What a client sees as the outage: from the kill to the first request sent after it
    # that succeeded.
    again = min((o.started for o in outcomes if o.ok and o.started >= killed), default=None)
    return {
        "requests_during": len(during),
        "failed_during": len(retriable) + len(cut),
        "failed_retriable": len(retriable),
        "failed_cut_mid_stream": len(cut),
        "failed_outside_event": len(failures(before)[0]) + len(failures(after)[0]),
        "longest_during_ms": ms(longest),
        "served_again_after_kill_s": None if again is None else round(again - killed, 2),
        "before": latency(before),
        "during": latency(during),
        "after": latency(after),
        "first_errors": sorted({o.error for o in retriable + cut})[:3],
    }


def run(fleet: LabFleet, key: str, down_s: float, phase_s: float) -> dict[str, Any]:
    """Traffic on both paths around one controller SIGKILL and restart."""
    bound = 2 * phase_s + down_s + 180
    paths = {
        "node": Traffic(
            fleet.node_gateway_url(GATEWAY_NODE),
            api_key=key,
            http_client=node_gateway_client(GATEWAY_NODE),
            max_requests=MAX_REQUESTS,
            max_seconds=bound,
        ),
        "controller": Traffic(
            fleet.controller.gateway_url, max_requests=MAX_REQUESTS, max_seconds=bound
        ),
    }
    for traffic in paths.values():
        traffic.__enter__()
    try:
        time.sleep(phase_s)
        killed = time.time()
        fleet.kill_controller()
        time.sleep(down_s)
        restarted = time.time()
        fleet.restart_controller()
        wait_for("the fleet seen again", lambda: fleet.ready_on() == PREFERRED, 60, fleet.explain)
        back = time.time()
        time.sleep(phase_s)
    finally:
        outcomes = {name: traffic.stop() for name, traffic in paths.items()}
    return {
        "down_s": round(restarted - killed, 2),
        "event_s": round(back - killed, 2),
        "paths": {name: figures(o, killed, back) for name, o in outcomes.items()},
    }


def show(result: dict[str, Any]) -> None:
    print(f"\ncontroller down {result['down_s']} s; event (kill → fleet seen again) "
          f"{result['event_s']} s")  # fmt: skip
    print(
        f"{'path':11}{'during':>8}{'failed':>8}{'longest ms':>12}{'served again s':>16}"
        f"{'p50/p99 before':>17}{'during':>14}{'after':>14}"
    )
    for name, row in result["paths"].items():
        spans = [f"{row[p]['p50_ms']}/{row[p]['p99_ms']}" for p in ("before", "during", "after")]
        print(
            f"{name:11}{row['requests_during']:>8}{row['failed_during']:>8}"
            f"{row['longest_during_ms']!s:>12}{row['served_again_after_kill_s']!s:>16}"
            f"{spans[0]:>17}{spans[1]:>14}{spans[2]:>14}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--down", type=float, default=10.0, help="seconds the controller is down")
    parser.add_argument("--phase", type=float, default=15.0, help="seconds before and after")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    reason = lab_available()
    if reason is not None:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    with (
        tempfile.TemporaryDirectory(prefix="edgefleet-control-plane-") as tmp,
        Lab() as lab,
        lab_fleet(lab, Path(tmp)) as fleet,
    ):
        key = fleet.api_key("control-plane-loss benchmark")
        wait_key_in_force(fleet, key)
        result = run(fleet, key, args.down, args.phase)
    report: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "setup": "3 edge-nodes in network namespaces, SmolLM2-135M on llama.cpp, agent on n1+n2, "
        "traffic through n3's gateway and the controller's, an agent request and a streamed "
        "model request every 0.5 s on each",
        **result,
    }
    show(result)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
