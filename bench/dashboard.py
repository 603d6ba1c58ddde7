"""How the dashboard holds up with a large fleet: a benchmark, not a test.

    python bench/dashboard.py [--nodes 200] [--window 30] [--loads 3]

A real `edgectl controller` process with its gateway on loopback (which serves `/ui`),
and simulated nodes (bench/scale_nodes.py: each a real gRPC server on its own 127.0.0.1
port, heartbeating every second) named by one applied deployment, two agents per node as
in bench/controller_scale.py. Debian's Chromium, driven by Playwright as the tests drive
it (tests/browser.py), opens `/ui`. Figures:

* first render — from the start of navigation to every node's row (with its state) in
  the page, as the page's own clock (`performance.now()`) tells; the median of `--loads`
  fresh page loads, and the slowest;
* update cost — over `--window` seconds of a page left open on the fleet view: the page's
  main-thread time (Chrome's own Performance.getMetrics: TaskDuration, ScriptDuration,
  LayoutDuration, RecalcStyleDuration deltas), per second and per status refresh (the
  page's calls to /ui/api/status); the JavaScript in it by V8's sampling profiler, with
  the busiest functions (Chrome's ScriptDuration leaves out script run from callbacks);
  the long tasks (over 50 ms) it saw, and the `performance.measure` entries the page
  records, if any; the controller's CPU meanwhile;
* the size of /ui/api/status and /ui/api/nodes as JSON.

Everything stays on loopback and stops by itself. Results go to
bench/results/dashboard.json and are printed as a table.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from controller_scale import roll_out  # noqa: E402
from scale_controller import log_tail, wait_in_charge, wait_serving  # noqa: E402
from scale_controller import start_controller as start_scale_controller  # noqa: E402
from scale_nodes import GiB, start_sims  # noqa: E402
from scale_store import StoreUnderTest  # noqa: E402

from edgefleet.v1 import controller_pb2_grpc  # noqa: E402
from edgefleet_common.grpc_transport import client_options  # noqa: E402
from edgefleet_common.ports import free_port  # noqa: E402
from tests.browser import CHROMIUM, DESKTOP, FLAGS, chromium_missing  # noqa: E402

RESULTS = REPO / "bench" / "results" / "dashboard.json"
ROLLOUT_TIMEOUT_S = 300.0
RENDER_TIMEOUT_S = 120.0
ROWS = "[data-testid^='node-sim-'] [data-testid='node-state']"
"""A node row's state: in the page once the row is drawn."""
MAIN_THREAD = ("TaskDuration", "ScriptDuration", "LayoutDuration", "RecalcStyleDuration")
"""Chrome's own counters of the renderer main thread's busy time (seconds, cumulative)."""


def start_controller(data_dir: Path, log: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    """`edgectl controller` on SQLite as bench/controller_scale.py runs it, with its gateway
    (and so /ui) on loopback; the process, its API address and the dashboard's URL."""
    gateway = f"127.0.0.1:{free_port()}"
    process, address = start_scale_controller(
        data_dir, StoreUnderTest("sqlite", []), log, gateway=gateway
    )
    return process, address, f"http://{gateway}/ui"


@dataclass
class FirstRender:
    """Milliseconds from navigation start to every node row drawn, per fresh page load."""

    loads_ms: list[float]
    median_ms: float = 0.0
    slowest_ms: float = 0.0
    dom_content_loaded_ms: float = 0.0

    def __post_init__(self) -> None:
        self.median_ms = round(statistics.median(self.loads_ms), 1)
        self.slowest_ms = round(max(self.loads_ms), 1)


@dataclass
class UpdateCost:
    """The open page's main-thread time over a window of steady heartbeats."""

    window_s: float
    status_refreshes: int
    main_thread_ms: dict[str, float]
    task_ms_per_s: float
    task_ms_per_refresh: float | None
    script_ms_per_refresh: float | None
    long_tasks: int
    longest_task_ms: float
    controller_cpu_percent: float
    js_ms_per_refresh: float | None
    """JavaScript alone (V8's sampling profiler, idle and GC left out), per refresh."""
    js_top_ms: dict[str, float] = field(default_factory=dict)
    """Where that JavaScript time goes: self time of the busiest functions over the window."""
    page_measures: dict[str, dict[str, float]] = field(default_factory=dict)


async def time_first_render(context: Any, url: str, count: int) -> tuple[float, float]:
    """One fresh page load: (ms to every row, ms to DOMContentLoaded), by the page's clock."""
    page = await context.new_page()
    try:
        await page.goto(url, wait_until="commit")
        drawn = await page.wait_for_function(
            f"document.querySelectorAll(`{ROWS}`).length >= {count} && performance.now()",
            polling="raf",
            timeout=RENDER_TIMEOUT_S * 1000,
        )
        rows_ms = float(await drawn.json_value())
        loaded = await page.evaluate(
            "performance.getEntriesByType('navigation')[0]?.domContentLoadedEventEnd || 0"
        )
        return rows_ms, float(loaded)
    finally:
        await page.close()


OBSERVE_LONG_TASKS = """() => {
    window.benchLongTasks = [];
    new PerformanceObserver((list) => {
        for (const entry of list.getEntries()) window.benchLongTasks.push(entry.duration);
    }).observe({type: "longtask"});
}"""

PAGE_MEASURES = """() => {
    const out = {};
    for (const m of performance.getEntriesByType("measure")) {
        (out[m.name] ||= []).push(m.duration);
    }
    return out;
}"""


async def main_thread(cdp: Any) -> dict[str, float]:
    """Chrome's cumulative main-thread counters now, in seconds."""
    metrics = (await cdp.send("Performance.getMetrics"))["metrics"]
    return {m["name"]: float(m["value"]) for m in metrics if m["name"] in MAIN_THREAD}


NOT_SCRIPT = {"(idle)", "(program)", "(garbage collector)", "(root)"}


def js_self_time(profile: dict[str, Any]) -> collections.Counter[str]:
    """Self time (ms) per function (`name file:line`) in a V8 CPU profile."""
    frames = {node["id"]: node["callFrame"] for node in profile["nodes"]}
    spent: collections.Counter[str] = collections.Counter()
    for sample, delta in zip(profile["samples"], profile["timeDeltas"], strict=True):
        frame = frames[sample]
        name = frame["functionName"] or "(anonymous)"
        if name in NOT_SCRIPT:
            continue
        where = frame["url"].rsplit("/", 1)[-1]
        spent[f"{name} {where}:{frame['lineNumber'] + 1}" if where else name] += delta / 1000
    return spent


def summarize_measures(measures: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    """Per `performance.measure` name: how many, median and slowest (ms)."""
    return {
        name: {
            "count": len(values),
            "median_ms": round(statistics.median(values), 2),
            "max_ms": round(max(values), 2),
        }
        for name, values in measures.items()
        if values
    }


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


async def measure_updates(
    context: Any, url: str, count: int, window_s: float, controller: psutil.Process
) -> UpdateCost:
    """Open the fleet view, let it settle, then count its main-thread time over the window."""
    page = await context.new_page()
    refreshes: list[float] = []
    page.on(
        "request",
        lambda request: (
            refreshes.append(time.monotonic())
            if request.url.split("?")[0].endswith("/ui/api/status")
            else None
        ),
    )
    try:
        await page.goto(url)
        await page.wait_for_function(
            f"document.querySelectorAll(`{ROWS}`).length >= {count}",
            timeout=RENDER_TIMEOUT_S * 1000,
        )
        await page.evaluate(OBSERVE_LONG_TASKS)
        await asyncio.sleep(3.0)  # the first refreshes after the render
        cdp = await page.context.new_cdp_session(page)
        await cdp.send("Performance.enable")
        await cdp.send("Profiler.enable")
        await cdp.send("Profiler.start")
        await page.evaluate("performance.clearMeasures(); window.benchLongTasks.length = 0")
        before, started, cpu = await main_thread(cdp), time.monotonic(), cpu_seconds(controller)
        await asyncio.sleep(window_s)
        after, ended = await main_thread(cdp), time.monotonic()
        profile = (await cdp.send("Profiler.stop"))["profile"]
        controller_cpu = cpu_seconds(controller) - cpu
        long_tasks: list[float] = await page.evaluate("window.benchLongTasks")
        measures = await page.evaluate(PAGE_MEASURES)
    finally:
        await page.close()
    spent = {name: round(1000 * (after[name] - before.get(name, 0.0)), 1) for name in after}
    seen = sum(started <= t < ended for t in refreshes)
    wall = ended - started
    task, script = spent.get("TaskDuration", 0.0), spent.get("ScriptDuration", 0.0)
    js = js_self_time(profile)
    return UpdateCost(
        window_s=round(wall, 1),
        status_refreshes=seen,
        main_thread_ms=spent,
        task_ms_per_s=round(task / wall, 2),
        task_ms_per_refresh=round(task / seen, 2) if seen else None,
        script_ms_per_refresh=round(script / seen, 2) if seen else None,
        long_tasks=len(long_tasks),
        longest_task_ms=round(max(long_tasks, default=0.0), 1),
        controller_cpu_percent=round(100 * controller_cpu / wall, 1),
        js_ms_per_refresh=round(js.total() / seen, 2) if seen else None,
        js_top_ms={name: round(ms, 1) for name, ms in js.most_common(8)},
        page_measures=summarize_measures(measures),
    )


def json_size(url: str) -> int:
    """Bytes of one GET's body (as sent: the dashboard asks for no compression)."""
    with urllib.request.urlopen(url, timeout=30) as answer:
        return len(answer.read())


@dataclass
class Figures:
    nodes: int
    agents: int
    rollout_ready_s: float
    status_json_bytes: int
    nodes_json_bytes: int
    first_render: FirstRender
    updates: UpdateCost


async def browse(
    ui: str, count: int, loads: int, window_s: float, profile: Path, controller: psutil.Process
) -> tuple[FirstRender, UpdateCost]:
    """First render over `loads` fresh pages, then the update cost, in one Chromium."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            headless=True,
            args=list(FLAGS),
            viewport=DESKTOP,
            service_workers="block",
            # The page's CSP forbids eval, which Playwright's waits for a condition use.
            bypass_csp=True,
        )
        try:
            renders = [await time_first_render(context, ui, count) for _ in range(loads)]
            first = FirstRender([round(r[0], 1) for r in renders])
            first.dom_content_loaded_ms = round(statistics.median(r[1] for r in renders), 1)
            updates = await measure_updates(context, ui, count, window_s, controller)
        finally:
            await context.close()
    return first, updates


async def bench(count: int, loads: int, window_s: float, tmp: Path) -> Figures:
    """Simulated nodes, the controller, the rollout; then the browser's figures."""
    acknowledged: dict[str, float] = {}
    servers, addresses = await start_sims(count, acknowledged)
    log = tmp / "controller.log"
    process, address, ui = start_controller(tmp / "controller", log)
    try:
        await wait_serving(address)
        async with grpc.aio.insecure_channel(address, options=client_options()) as channel:
            api = controller_pb2_grpc.ControllerServiceStub(channel)
            await wait_in_charge(api)
            rollout = await roll_out(api, addresses, acknowledged, ROLLOUT_TIMEOUT_S)
        await asyncio.sleep(2.0)
        status_bytes = await asyncio.to_thread(json_size, f"{ui}/api/status")
        nodes_bytes = await asyncio.to_thread(json_size, f"{ui}/api/nodes")
        first, updates = await browse(
            ui, count, loads, window_s, tmp / "profile", psutil.Process(process.pid)
        )
    except Exception as exc:
        raise RuntimeError(f"{exc}\n{log_tail(log)}") from exc
    finally:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(20)
        if process.poll() is None:
            process.kill()
        await asyncio.gather(*(s.stop(0) for s in servers))
    return Figures(
        nodes=count,
        agents=2 * count,
        rollout_ready_s=round(rollout.ready_s, 2),
        status_json_bytes=status_bytes,
        nodes_json_bytes=nodes_bytes,
        first_render=first,
        updates=updates,
    )


def show(f: Figures) -> None:
    """The figures as a Markdown table."""
    u = f.updates
    per_refresh = "-" if u.task_ms_per_refresh is None else f"{u.task_ms_per_refresh:.1f} ms"
    script = "-" if u.script_ms_per_refresh is None else f"{u.script_ms_per_refresh:.1f} ms"
    js = "-" if u.js_ms_per_refresh is None else f"{u.js_ms_per_refresh:.1f} ms"
    rows = [
        ("nodes (agents)", f"{f.nodes} ({f.agents})"),
        ("/ui/api/status JSON", f"{f.status_json_bytes / 1024:,.0f} KiB"),
        ("/ui/api/nodes JSON", f"{f.nodes_json_bytes / 1024:,.0f} KiB"),
        ("DOMContentLoaded (median)", f"{f.first_render.dom_content_loaded_ms:.0f} ms"),
        (
            f"first render of all {f.nodes} rows (median of {len(f.first_render.loads_ms)})",
            f"{f.first_render.median_ms:.0f} ms (slowest {f.first_render.slowest_ms:.0f} ms)",
        ),
        (f"status refreshes in {u.window_s:.0f} s", f"{u.status_refreshes}"),
        ("main-thread busy", f"{u.task_ms_per_s:.1f} ms/s ({u.task_ms_per_s / 10:.1f} %)"),
        ("main-thread time per refresh", per_refresh),
        ("script time per refresh (Chrome's ScriptDuration)", script),
        ("JavaScript per refresh (V8 profiler)", js),
        ("long tasks (> 50 ms)", f"{u.long_tasks} (longest {u.longest_task_ms:.0f} ms)"),
        ("controller CPU while the page is open", f"{u.controller_cpu_percent:.1f} %"),
    ]
    rows += [
        (f"page measure `{name}`", f"{m['count']:.0f}x, median {m['median_ms']:.1f} ms")
        for name, m in u.page_measures.items()
    ]
    print("| figure | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    print(f"\nJavaScript self time over the {u.window_s:.0f} s window, busiest functions:")
    for name, ms in u.js_top_ms.items():
        print(f"  {ms:8.1f} ms  {name}")


def machine() -> dict[str, Any]:
    version = subprocess.run(
        [str(CHROMIUM), "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / GiB, 1),
        "python": platform.python_version(),
        "chromium": version,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=200, help="simulated nodes")
    parser.add_argument("--window", type=float, default=30.0, help="seconds of steady updates")
    parser.add_argument("--loads", type=int, default=3, help="fresh page loads to time")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    missing = chromium_missing()
    if missing:
        print(f"cannot run the dashboard benchmark: {missing}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="edgefleet-dashboard-") as tmp:
        figures = asyncio.run(bench(args.nodes, args.loads, args.window, Path(tmp)))
    show(figures)
    report = {
        "benchmark": "dashboard",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "note": "nodes are simulated (bench/scale_nodes.py), heartbeating every second; "
        "main-thread times are Chrome's Performance.getMetrics deltas",
        **asdict(figures),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
