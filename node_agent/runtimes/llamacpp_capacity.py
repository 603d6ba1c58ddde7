"""What a running llama-server says about itself: its load, its chat template, its build.

* `GET /slots` lists the server's slots; `is_processing` marks the busy ones.
* `GET /metrics` (with `--metrics`) has `llamacpp:requests_processing` and
  `llamacpp:requests_deferred`: requests waiting for a free slot.
* `GET /props` has `chat_template_caps`: whether the model's chat template shows
  tools to the model and renders its calls (`supports_tool_calls`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from node_agent.runtimes.prometheus_text import parse_samples, total

log = logging.getLogger(__name__)

_READ_TIMEOUT = aiohttp.ClientTimeout(total=1.0)


@dataclass(frozen=True, slots=True)
class ServerLoad:
    """One reading of a server's load; None where the server did not answer."""

    slots_total: int | None = None
    slots_busy: int | None = None
    queued: int | None = None


async def read_capacity(client: aiohttp.ClientSession, base_url: str) -> ServerLoad:
    """Read `/slots` and `/metrics` of the server at `base_url` (no `/v1`), together."""
    slots, metrics = await asyncio.gather(
        _get(client, f"{base_url}/slots", json=True), _get(client, f"{base_url}/metrics")
    )
    total_slots = busy = queued = None
    if isinstance(slots, list):
        total_slots = len(slots)
        busy = sum(1 for slot in slots if isinstance(slot, dict) and slot.get("is_processing"))
    if isinstance(metrics, str):
        deferred = total(parse_samples(metrics), "llamacpp:requests_deferred")
        queued = int(deferred) if deferred is not None else None
    return ServerLoad(total_slots, busy, queued)


async def template_calls_tools(client: aiohttp.ClientSession, base_url: str) -> bool:
    """Whether the model's chat template takes tools and tool calls (False if not known)."""
    props = await _get(client, f"{base_url}/props", json=True)
    caps = props.get("chat_template_caps") if isinstance(props, dict) else None
    return isinstance(caps, dict) and bool(caps.get("supports_tool_calls"))


async def server_version(binary: Path) -> str:
    """`version N (COMMIT)` as the binary prints it; `unknown version` if it does not."""
    with contextlib.suppress(OSError, TimeoutError):
        process = await asyncio.create_subprocess_exec(
            str(binary),
            "--version",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            output, _ = await asyncio.wait_for(process.communicate(), 10.0)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        for line in output.decode(errors="replace").splitlines():
            if line.startswith("version"):  # `version: 0.5.0 (build 1, commit 0c1e570)`
                return line.removeprefix("version").strip(" :")
    return "unknown version"


async def _get(client: aiohttp.ClientSession, url: str, *, json: bool = False) -> object:
    try:
        async with client.get(url, timeout=_READ_TIMEOUT) as response:
            if response.status != 200:
                return None
            return await (response.json() if json else response.text())
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        log.debug("llama.cpp server load not read", extra={"url": url, "error": repr(exc)})
        return None
