"""The gateway's HTTP parts side by side: servers, clients and event loops as a forwarding proxy.

    scripts/bench-setup                     # once: nginx, wrk, and .venv-bench with the parts
    .venv/bin/python bench/http_parts.py    # [--seconds 4] [--concurrency 1,16] [--quick]

Each candidate is bench/http_parts_proxy.py (one process, in .venv-bench) in front of
the zero-latency nginx upstream that bench/gateway.py uses: a server takes the
request, a client POSTs its body upstream, the answer goes back. Candidates:

* servers: `h11` (the gateway's former server), `edgefleet` (its server now),
  `aiohttp` (aiohttp's low-level server), `uvicorn` (uvicorn + httptools, ASGI);
* clients: `aiohttp`, `httpx`, `httpcore`;
* loops: the default asyncio loop, and uvloop.

The matrix: every server with the aiohttp client on both loops; every server with
httpx and with httpcore on asyncio; every server relaying an event stream (aiohttp
client, asyncio). Per cell, wrk (one thread, keep-alive) at 1 and 16 connections:
p50/p99 of whole answers, requests/s, errors, and the proxy process's CPU time per
request (psutil). The upstream alone is the `direct` row. The matrix is run `--rounds`
times in turn and each figure is the median over the rounds (requests and errors: summed).

Everything runs on 127.0.0.1; every run is bounded in time. Results go to
bench/results/http_parts.json and are printed as a table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import psutil  # noqa: E402
from gateway_load import chat_body, run_clients, run_wrk, wrk_version  # noqa: E402
from gateway_machine import OtherLoad, describe  # noqa: E402
from gateway_nginx import REPLY, Upstream, wait_listening  # noqa: E402
from gateway_nginx import version as nginx_version  # noqa: E402
from gateway_runs import ZERO_CHECK, cpu_seconds, wrk_figures  # noqa: E402

from edgefleet_common.ports import free_port  # noqa: E402

RESULTS = REPO / "bench" / "results" / "http_parts.json"
BENCH_PYTHON = REPO / ".venv-bench" / "bin" / "python"
PROXY = REPO / "bench" / "http_parts_proxy.py"
SERVERS = ("h11", "edgefleet", "aiohttp", "uvicorn")
PACKAGES = ("aiohttp", "h11", "httpcore", "httptools", "httpx", "uvicorn", "uvloop")


@dataclass(frozen=True, slots=True)
class Combo:
    """One proxy: which server, client and loop, relaying which kind of answer."""

    server: str
    client: str
    loop: str
    mode: str
    """`json` (a whole completion) or `sse` (an event stream, relayed as it comes)."""


@dataclass
class Cell:
    """One combo at one concurrency."""

    server: str
    client: str
    loop: str
    mode: str
    concurrency: int
    requests: int
    errors: int
    per_second: float
    p50_ms: float
    p99_ms: float
    cpu_ms_per_request: float | None
    rss_mib: float | None


def matrix(servers: Sequence[str], quick: bool) -> list[Combo]:
    """The combos to measure (`quick`: the aiohttp client on asyncio only)."""
    combos = [Combo(s, "aiohttp", "asyncio", "json") for s in servers]
    if quick:
        return combos
    combos += [Combo(s, "aiohttp", "uvloop", "json") for s in servers]
    combos += [Combo(s, c, "asyncio", "json") for c in ("httpx", "httpcore") for s in servers]
    combos += [Combo(s, "aiohttp", "asyncio", "sse") for s in servers]
    return combos


class Proxy:
    """One http_parts_proxy.py process."""

    def __init__(self, combo: Combo, upstream_url: str, log: Path) -> None:
        self.port = free_port()
        argv = [
            str(BENCH_PYTHON), str(PROXY), combo.server, combo.client, combo.loop,
            str(self.port), upstream_url,
        ]  # fmt: skip
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            wait_listening([self.port], self.process, 20.0)
        except RuntimeError as exc:
            self.close()
            raise RuntimeError(f"{exc}\n{log.read_text(errors='replace')[-2000:]}") from None
        self.url = f"http://127.0.0.1:{self.port}/v1/chat/completions"

    def close(self) -> None:
        """Stop it (idempotent)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def measure(
    combo: Combo, url: str, processes: list[psutil.Process], concurrency: int, seconds: float
) -> Cell:
    """wrk at `concurrency` for `seconds`; the proxy's CPU per request over the run."""
    body = chat_body("zero", combo.mode == "sse")
    before = cpu_seconds(processes)
    wrk = run_wrk(url, body, concurrency, seconds)
    used = cpu_seconds(processes) - before
    return Cell(
        server=combo.server,
        client=combo.client,
        loop=combo.loop,
        mode=combo.mode,
        concurrency=concurrency,
        **wrk_figures(wrk, used, processes),
    )


def check_answers(url: str, mode: str) -> None:
    """A short run that checks every answer (status 200, the canned reply in the body)."""
    run = run_clients(url, chat_body("zero", mode == "sse"), 4, 0.5, 2_000, ZERO_CHECK)
    if run.failed or not run.ok:
        details = {o.detail for o in run.failed}
        raise RuntimeError(f"wrong answers from {url}: {run.errors() or 'none'} {details}")


def run_combo(
    combo: Combo, upstream: Upstream, tmp: Path, concurrency: Sequence[int], seconds: float
) -> list[Cell]:
    """Start the combo's proxy, check it, measure it at each concurrency, stop it."""
    base = upstream.sse_url if combo.mode == "sse" else upstream.json_url
    name = f"{combo.server}-{combo.client}-{combo.loop}-{combo.mode}"
    proxy = Proxy(combo, f"{base}/chat/completions", tmp / f"{name}.log")
    try:
        check_answers(proxy.url, combo.mode)
        processes = [psutil.Process(proxy.process.pid)]
        run_wrk(proxy.url, chat_body("zero", combo.mode == "sse"), 16, 1.0)  # warm-up
        return [measure(combo, proxy.url, processes, c, seconds) for c in concurrency]
    finally:
        proxy.close()


def direct_cells(upstream: Upstream, concurrency: Sequence[int], seconds: float) -> list[Cell]:
    """The upstream alone, for each mode and concurrency."""
    cells = []
    for mode, base in (("json", upstream.json_url), ("sse", upstream.sse_url)):
        combo = Combo("direct", "-", "-", mode)
        for c in concurrency:
            cells.append(measure(combo, f"{base}/chat/completions", [], c, seconds))
    return cells


def bench_versions() -> dict[str, str]:
    """The versions of the parts installed in .venv-bench."""
    code = (
        "import importlib.metadata as m, json, sys;"
        f"print(json.dumps({{p: m.version(p) for p in {list(PACKAGES)!r}}}))"
    )
    done = subprocess.run(
        [str(BENCH_PYTHON), "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    found: dict[str, str] = json.loads(done.stdout)
    return found


def medians(rounds: Sequence[Sequence[Cell]]) -> list[Cell]:
    """Each cell's median over the rounds (every field on its own), in the first round's order;
    rounds go through the whole matrix in turn, so noise that comes and goes hits each
    candidate alike."""
    found = []
    for i, first in enumerate(rounds[0]):
        same = [cells[i] for cells in rounds]

        def median(values: list[float | None]) -> float | None:
            known = [v for v in values if v is not None]
            return statistics.median(known) if known else None

        found.append(
            replace(
                first,
                requests=sum(c.requests for c in same),
                errors=sum(c.errors for c in same),
                per_second=round(statistics.median(c.per_second for c in same), 1),
                p50_ms=statistics.median(c.p50_ms for c in same),
                p99_ms=statistics.median(c.p99_ms for c in same),
                cpu_ms_per_request=median([c.cpu_ms_per_request for c in same]),
                rss_mib=median([c.rss_mib for c in same]),
            )
        )
    return found


# -- the report ----------------------------------------------------------------------------


def table(cells: Sequence[Cell]) -> Iterator[str]:
    base = {(c.mode, c.concurrency): c for c in cells if c.server == "direct"}
    yield (
        "| server | client | loop | answer | clients | req/s | p50 ms | p99 ms | added p50 "
        "| CPU/req | RSS | errors |"
    )
    yield "|---" * 12 + "|"
    for c in cells:
        b = base.get((c.mode, c.concurrency))
        extra = f"{c.p50_ms - b.p50_ms:+.2f}" if b is not None else "-"
        cpu = "-" if c.cpu_ms_per_request is None else f"{c.cpu_ms_per_request:.3f} ms"
        rss = "-" if c.rss_mib is None else f"{c.rss_mib:.0f} MiB"
        yield (
            f"| {c.server} | {c.client} | {c.loop} | {c.mode} | {c.concurrency} "
            f"| {c.per_second:,.0f} | {c.p50_ms:.2f} | {c.p99_ms:.2f} | {extra} | {cpu} "
            f"| {rss} | {c.errors} |"
        )


def progress(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", default="1,16", help="clients, comma-separated")
    parser.add_argument("--seconds", type=float, default=4.0, help="wrk time per cell")
    parser.add_argument("--servers", default=",".join(SERVERS), help="servers, comma-separated")
    parser.add_argument("--quick", action="store_true", help="aiohttp client, asyncio only")
    parser.add_argument("--rounds", type=int, default=3, help="times through the matrix")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    if not BENCH_PYTHON.exists():
        print(f"{BENCH_PYTHON} is missing: run scripts/bench-setup", file=sys.stderr)
        return 1
    concurrency = [int(c) for c in str(args.concurrency).split(",")]
    combos = matrix([s for s in str(args.servers).split(",") if s], args.quick)
    load_before = os.getloadavg()
    if load_before[0] > 0.5:
        progress(f"the machine is not quiet (load {load_before[0]:.2f}): figures will be noisy")
    started = time.monotonic()
    rounds: list[list[Cell]] = []
    with (
        tempfile.TemporaryDirectory(prefix="edgefleet-http-parts-") as folder,
        OtherLoad() as other_load,
    ):
        tmp = Path(folder)
        upstream = Upstream(tmp / "upstream", free_port(), free_port())
        try:
            for number in range(1, args.rounds + 1):
                cells = direct_cells(upstream, concurrency, args.seconds)
                for combo in combos:
                    found = run_combo(combo, upstream, tmp, concurrency, args.seconds)
                    cells += found
                    rates = ", ".join(f"c={c.concurrency} {c.per_second:,.0f}/s" for c in found)
                    progress(
                        f"round {number}: {combo.server} {combo.client} {combo.loop} "
                        f"{combo.mode}: {rates}"
                    )
                rounds.append(cells)
        finally:
            upstream.close()
    cells = medians(rounds)
    lines = [
        f"Forwarding proxy in front of a zero-latency upstream ({REPLY!r}), wrk whole answers, "
        f"median of {args.rounds} round(s):",
        *table(cells),
        f"\nCPU used by other processes during the run: {other_load.percent:.0f} % of one core",
    ]
    print("\n".join(lines))
    report = {
        "benchmark": "http_parts",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": describe({"nginx": nginx_version(), "wrk": wrk_version()}),
        "parts": bench_versions(),
        "seconds": round(time.monotonic() - started, 1),
        "load_average_before": [round(v, 2) for v in load_before],
        "other_processes_cpu_percent": round(other_load.percent, 1),
        "settings": {
            "concurrency": concurrency,
            "wrk_seconds_per_cell": args.seconds,
            "rounds": args.rounds,
        },
        "tools": {
            "latency_throughput": "wrk, one thread, keep-alive, whole answers",
            "cpu": "psutil user+system time of the proxy process over the wrk run / requests",
        },
        "cells": [asdict(c) for c in cells],
        "rounds": [[asdict(c) for c in found] for found in rounds],
        "table": lines,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
