"""What the fleet cache saves: bytes from the origin and time until every node is ready, for
three nodes and one model, with the cache and without, in one run. A benchmark, not a test.

    python bench/model_delivery.py [--reps 1] [--origin-mbit 50]

Needs root and `ip netns` (the network-namespace lab of the tests) and the llama.cpp
runtime with SmolLM2-135M. The lab of `tests/e2e/test_model_delivery.py`: an HTTP origin
on its own host serving the SmolLM2 GGUF (98 MB) over a link capped at `--origin-mbit`
(a shop's uplink; the LAN between the nodes is not capped), three fresh edge-nodes with
empty blob stores, and a controller. One manifest places the model (an http:// source)
on all three; the clock runs from `edgectl apply` until all three report it ready.

* `fleet-cache` — the three nodes share one `site` label: one of them fetches from the
  origin, the others from it over the LAN (as it downloads).
* `no-fleet-cache` — each node in a site of its own, so each one goes to the origin.
  There is no switch that turns the cache off; separate sites are how a fleet without
  shared LAN looks to the controller. If the nodes still fetched from each other, the
  bytes from the origin say so (fewer than three copies) and a warning is printed.

Per run: bytes from the origin (its access log) and copies of the file they make, time
to all-ready and per node, where each node's bytes came from (the sources its download
progress named), and the nodes' log lines about their downloads. Results go to
bench/results/model_delivery.json.
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
from contextlib import ExitStack
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.e2e.model_lab import ModelDef, ModelFleet, Sampler, manifest, model_fleet  # noqa: E402
from tests.netlab import Lab, lab_available  # noqa: E402

RESULTS = REPO / "bench" / "results" / "model_delivery.json"
ALIAS = "smollm2"
NODES = ("n1", "n2", "n3")
MODES: dict[str, dict[str, str]] = {
    "fleet-cache": dict.fromkeys(NODES, "shop"),
    "no-fleet-cache": {n: f"shop-{n}" for n in NODES},
}
READY_TIMEOUT_S = 600.0
FETCH_WORDS = ("model blob", "blob source failed")
"""Node log lines kept in the results: where each download went, and what failed."""


def wait_all_ready(fleet: ModelFleet, started: float) -> dict[str, float]:
    """Seconds from `started` until each node reported the model ready; fails on `failed`."""
    ready: dict[str, float] = {}
    while len(ready) < len(NODES):
        now = time.monotonic()
        if now - started > READY_TIMEOUT_S:
            raise RuntimeError(f"not all ready within {READY_TIMEOUT_S:.0f}s\n{fleet.explain()}")
        for name in NODES:
            if name in ready:
                continue
            state = fleet.state(name, ALIAS)
            if state == "ready":
                ready[name] = round(now - started, 2)
            elif state == "failed":
                raise RuntimeError(f"{name}: the model failed\n{fleet.explain()}")
        time.sleep(0.1)
    return ready


def one_run(mode: str, origin_bits: int, tmp: Path) -> dict[str, Any]:
    """A fresh lab and fleet; apply, wait, and read the origin's log."""
    with Lab() as lab, model_fleet(lab, tmp, sites=MODES[mode]) as fleet:
        blob = fleet.origin.files.smollm2
        if origin_bits:
            fleet.origin.host.bandwidth(origin_bits)
        text = manifest(
            [ModelDef(ALIAS, fleet.origin.url(blob))], {n: [ALIAS] for n in NODES}, fleet.sites
        )
        with ExitStack() as stack:
            samplers = {n: stack.enter_context(Sampler(fleet, n, ALIAS)) for n in NODES}
            started = time.monotonic()
            fleet.apply(text)
            ready = wait_all_ready(fleet, started)
        served = fleet.origin.bytes_served(blob)
        sources = {
            n: sorted({source for source, _ in sampler.samples}) for n, sampler in samplers.items()
        }
        fetch_log = {
            n: [line for line in node.process.lines if any(w in line for w in FETCH_WORDS)]
            for n, node in fleet.nodes.items()
        }
        return {
            "mode": mode,
            "bytes_from_origin": served,
            "copies_from_origin": round(served / blob.size, 3),
            "all_ready_s": max(ready.values()),
            "ready_s": ready,
            "sources": sources,
            "origin_requests": len(fleet.origin.gets(blob)),
            "file_bytes": blob.size,
            "fetch_log": fetch_log,
        }


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Min/median/max of the figures of one mode's runs."""

    def spread(key: str) -> dict[str, float]:
        values = [float(r[key]) for r in runs]
        return {"min": min(values), "median": statistics.median(values), "max": max(values)}

    return {
        "all_ready_s": spread("all_ready_s"),
        "bytes_from_origin": spread("bytes_from_origin"),
        "copies_from_origin": spread("copies_from_origin"),
        "runs": runs,
    }


def print_table(summary: dict[str, dict[str, Any]]) -> None:
    print(f"\n{'mode':<16} {'bytes from origin':>18} {'copies':>7} {'all ready (median)':>19}")
    for mode, figures in summary.items():
        served = figures["bytes_from_origin"]["median"]
        copies = figures["copies_from_origin"]["median"]
        ready = figures["all_ready_s"]["median"]
        print(f"{mode:<16} {served:>18,.0f} {copies:>7.2f} {ready:>18.1f}s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=1, help="runs of each mode")
    parser.add_argument(
        "--origin-mbit", type=float, default=50.0, help="the origin's link in Mbit/s (0: uncapped)"
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    reason = lab_available()
    if reason is not None:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    origin_bits = int(args.origin_mbit * 1_000_000)
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    for rep in range(args.reps):
        for mode in MODES:
            with tempfile.TemporaryDirectory(prefix="edgefleet-model-delivery-") as tmp:
                run = one_run(mode, origin_bits, Path(tmp))
            print(
                f"rep {rep + 1} {mode}: {run['bytes_from_origin']:,} bytes from the origin "
                f"({run['copies_from_origin']} copies), all ready in {run['all_ready_s']}s, "
                f"sources {run['sources']}",
                flush=True,
            )
            runs[mode].append(run)
    summary = {mode: summarize(mode_runs) for mode, mode_runs in runs.items()}
    print_table(summary)
    off = summary["no-fleet-cache"]["copies_from_origin"]["min"]
    if off < len(NODES) - 0.5:
        print(
            f"warning: without the cache the origin served only {off} copies: nodes in "
            "different sites still fetched from each other",
            file=sys.stderr,
        )
    report: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "setup": "3 edge-nodes in network namespaces, SmolLM2-135M GGUF (llama.cpp) from an "
        f"HTTP origin on its own host, origin link {args.origin_mbit:g} Mbit/s (tc tbf), LAN "
        "uncapped; no-fleet-cache: each node in its own site label",
        "reps": args.reps,
        "modes": summary,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
