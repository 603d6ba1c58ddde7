"""The measurements of bench/gateway.py, one function per kind of run.

* `overhead_cell` — one target, one mode (whole answers or a stream), one
  concurrency against the zero-latency upstream: wrk for latency, throughput and
  the proxy's CPU per request; for streams, the Python client for the time to the
  first byte;
* `end_to_end` — one request at a time through every target to the llama.cpp
  server, interleaved;
* `failover` — load through a proxy of two upstreams (or two peer nodes) while one
  is SIGKILLed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import psutil
from gateway_load import (
    ClientRun,
    Outcome,
    WrkResult,
    chat_body,
    expect_text,
    percentile,
    run_clients,
    run_interleaved,
    run_wrk,
)
from gateway_nginx import REPLY
from gateway_targets import Target

MiB = 2**20
ZERO_CHECK = expect_text(REPLY.encode())


def cpu_seconds(processes: Sequence[psutil.Process]) -> float:
    """User plus system CPU time of the processes, summed (gone ones count nothing)."""
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def wrk_figures(
    wrk: WrkResult, cpu_used: float, processes: Sequence[psutil.Process]
) -> dict[str, float | int | None]:
    """What every load cell records of one wrk run: counts, rate, latency, and the
    proxy's CPU per request and memory (None without proxy processes)."""
    return {
        "requests": wrk.requests,
        "errors": wrk.errors,
        "per_second": round(wrk.per_second, 1),
        "p50_ms": wrk.p50_ms,
        "p99_ms": wrk.p99_ms,
        "cpu_ms_per_request": round(1000 * cpu_used / wrk.requests, 3)
        if processes and wrk.requests
        else None,
        "rss_mib": round(rss_mib(processes), 1) if processes else None,
    }


def rss_mib(processes: Sequence[psutil.Process]) -> float:
    """Resident memory of the processes, summed."""
    total = 0
    for process in processes:
        try:
            total += process.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total / MiB


def r2(value: float) -> float | None:
    """Rounded for the report; None for NaN."""
    return None if math.isnan(value) else round(value, 3)


@dataclass
class Cell:
    """One target, mode and concurrency against the zero-latency upstream."""

    target: str
    mode: str
    concurrency: int
    requests: int
    errors: int
    per_second: float
    p50_ms: float
    p99_ms: float
    cpu_ms_per_request: float | None
    """The proxy's processes' CPU time over the wrk run, per completed request."""
    rss_mib: float | None
    upstream_cpu_percent: float
    """The upstream's CPU over the wrk run, % of one core (it is one process)."""
    ttfb_p50_ms: float | None = None
    ttfb_p99_ms: float | None = None
    ttfb_requests: int = 0
    ttfb_errors: int = 0
    ttfb_per_second: float = 0.0
    client_cpu_percent: float = 0.0
    """The Python client's CPU during the first-byte run, % of one core."""


def overhead_cell(
    target: Target,
    mode: str,
    concurrency: int,
    upstream: Sequence[psutil.Process],
    seconds: float,
    ttfb_seconds: float,
    ttfb_requests: int,
) -> Cell:
    """Measure one cell; `mode` is "non-streaming" or "streaming"."""
    stream = mode == "streaming"
    route = target.routes["sse" if stream else "json"]
    body = chat_body(route.model, stream)
    processes = target.processes()
    before, upstream_before = cpu_seconds(processes), cpu_seconds(upstream)
    wrk = run_wrk(route.url, body, concurrency, seconds)
    used, upstream_used = cpu_seconds(processes) - before, cpu_seconds(upstream) - upstream_before
    cell = Cell(
        target=target.name,
        mode=mode,
        concurrency=concurrency,
        **wrk_figures(wrk, used, processes),
        upstream_cpu_percent=round(100 * upstream_used / wrk.seconds, 1),
    )
    if stream:
        run = run_clients(route.url, body, concurrency, ttfb_seconds, ttfb_requests, ZERO_CHECK)
        cell.ttfb_p50_ms = r2(run.first_byte_ms(0.5))
        cell.ttfb_p99_ms = r2(run.first_byte_ms(0.99))
        cell.ttfb_requests = len(run.outcomes)
        cell.ttfb_errors = len(run.failed)
        cell.ttfb_per_second = round(run.per_second, 1)
        cell.client_cpu_percent = round(run.client_cpu_percent, 1)
    return cell


def warm_up(target: Target, seconds: float = 1.0) -> None:
    """A short run on every zero-latency route; RuntimeError if any answer is wrong."""
    for name in ("json", "sse"):
        if name not in target.routes:
            continue
        route = target.routes[name]
        body = chat_body(route.model, name == "sse")
        run = run_clients(route.url, body, 8, seconds, 10_000, ZERO_CHECK)
        if run.failed or not run.ok:
            details = {o.detail for o in run.failed}
            raise RuntimeError(f"{target.name} {name}: {run.errors() or 'no answer'} {details}")


@dataclass
class EndToEnd:
    """One target in front of the llama.cpp server, one request at a time."""

    target: str
    requests: int
    errors: int
    ttfb_p50_ms: float | None
    ttfb_p90_ms: float | None
    whole_p50_ms: float | None
    whole_p90_ms: float | None


def end_to_end(targets: Sequence[Target], rounds: int, max_tokens: int) -> list[EndToEnd]:
    """Streamed (first byte) and whole answers from SmolLM2 through every target,
    requests interleaved across targets so that each sees the server alike."""
    routes: dict[str, tuple[str, bytes]] = {}
    for target in targets:
        route = target.routes["llama"]
        routes[f"{target.name}/stream"] = (route.url, chat_body(route.model, True, max_tokens))
        routes[f"{target.name}/whole"] = (route.url, chat_body(route.model, False, max_tokens))
    found = run_interleaved(routes, rounds, expect_text(b'"content"'))
    rows = []
    for target in targets:
        streamed, whole = found[f"{target.name}/stream"], found[f"{target.name}/whole"]
        good_stream = [o.first_byte_s * 1000 for o in streamed if not o.error]
        good_whole = [(o.ended - o.started) * 1000 for o in whole if not o.error]
        rows.append(
            EndToEnd(
                target=target.name,
                requests=len(streamed) + len(whole),
                errors=sum(1 for o in [*streamed, *whole] if o.error),
                ttfb_p50_ms=r2(percentile(good_stream, 0.5)),
                ttfb_p90_ms=r2(percentile(good_stream, 0.9)),
                whole_p50_ms=r2(percentile(good_whole, 0.5)),
                whole_p90_ms=r2(percentile(good_whole, 0.9)),
            )
        )
    return rows


@dataclass
class Failover:
    """Load through one proxy of two upstreams while one of them is SIGKILLed."""

    target: str
    concurrency: int
    seconds: float
    killed_at_s: float
    requests: int
    failed: int
    errors: dict[str, int]
    first_failure_s: float | None
    """After the kill; None when nothing failed."""
    last_failure_s: float | None
    per_second_before: float
    per_second_after: float
    samples: list[str]
    """A few distinct failed answers (status and the start of the body)."""
    killed_upstream_cpu_s: float = 0.0
    """CPU the killed upstream (for the peer path: the killed peer node) had used: more than
    nothing shows it was taking traffic."""


def failover(
    target: Target, kill: Callable[[], None], concurrency: int, seconds: float, kill_at: float
) -> tuple[Failover, ClientRun]:
    """Python clients for `seconds`; `kill` runs `kill_at` seconds in."""
    route = target.routes["json"]
    killed: list[float] = []

    def kill_now() -> None:
        killed.append(time.monotonic())
        kill()

    run = run_clients(
        route.url,
        chat_body(route.model, False),
        concurrency,
        seconds,
        10_000_000,
        ZERO_CHECK,
        during=kill_now,
        during_at=kill_at,
    )
    start = min(o.started for o in run.outcomes)
    moment = killed[0] if killed else start + kill_at
    failures = sorted(o.ended - moment for o in run.failed)
    before = _rate([o for o in run.ok if o.ended < moment], moment - start)
    end = max(o.ended for o in run.outcomes)
    after = _rate([o for o in run.ok if o.ended >= moment], end - moment)
    report = Failover(
        target=target.name,
        concurrency=concurrency,
        seconds=round(end - start, 2),
        killed_at_s=round(moment - start, 2),
        requests=len(run.outcomes),
        failed=len(run.failed),
        errors=run.errors(),
        first_failure_s=round(failures[0], 3) if failures else None,
        last_failure_s=round(failures[-1], 3) if failures else None,
        per_second_before=before,
        per_second_after=after,
        samples=sorted({f"{o.error}: {o.detail}" for o in run.failed})[:3],
    )
    return report, run


def _rate(outcomes: list[Outcome], seconds: float) -> float:
    return round(len(outcomes) / seconds, 1) if seconds > 0 else 0.0
