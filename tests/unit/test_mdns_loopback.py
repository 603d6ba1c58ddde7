"""mDNS between processes on 127.0.0.1 only, in the machine's own namespace.

Every zeroconf instance here is bound to 127.0.0.1 with IPv4 only, so nothing
is multicast on a real interface. Node ids are unique to the run because other
processes on the machine may advertise on loopback too.

Run as a module (`python -m tests.unit.test_mdns_loopback advertise|browse|discover
IP …`) it is the mDNS peer these tests and the lab's interop tests start: one
JSON object per line on stdout, commands on stdin.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from zeroconf.asyncio import AsyncZeroconf

from edgefleet_contract.node_advert import Advertiser, Browser, NodeAdvert, discover, open_zeroconf
from tests.netlab import Proc

REPO = Path(__file__).resolve().parents[2]
PEER = "tests.unit.test_mdns_loopback"
LOOPBACK = "127.0.0.1"

pytestmark = pytest.mark.slow

StartPeer = Callable[..., Proc]


# The peer ---------------------------------------------------------------------


def _emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, "t": time.time(), **fields}), flush=True)


def bindings(zeroconf: AsyncZeroconf) -> list[dict[str, Any]]:
    """Where each socket of a zeroconf instance is bound and sends multicast."""
    found = []
    engine = zeroconf.zeroconf.engine
    for wrapped in [*engine.senders, *engine.readers]:
        sock: socket.socket = wrapped.sock
        entry: dict[str, Any] = {"family": sock.family.name, "bound": sock.getsockname()[0]}
        if sock.family == socket.AF_INET:
            raw = sock.getsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, 4)
            entry["multicast_if"] = socket.inet_ntoa(raw)
        entry["sender"] = wrapped in engine.senders
        found.append(entry)
    return found


async def _lines() -> asyncio.Queue[str | None]:
    """Stdin lines (None at end of input), read in a thread."""
    queue: asyncio.Queue[str | None] = asyncio.Queue()
    loop = asyncio.get_running_loop()

    def read() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(queue.put_nowait, line.strip())
        loop.call_soon_threadsafe(queue.put_nowait, None)

    loop.run_in_executor(None, read)
    return queue


async def _advertise(ip: str, node_id: str, version: str, port: str, cluster: str) -> None:
    advert = NodeAdvert(node_id, version, int(port), cluster, (ip,))
    advertiser = Advertiser(advert, [ip])
    _emit("registering")
    await advertiser.start()
    assert advertiser._zeroconf is not None
    _emit("registered", sockets=bindings(advertiser._zeroconf))
    commands = await _lines()
    while (line := await commands.get()) is not None:
        command, _, arg = line.partition(" ")
        if command == "update":
            _emit("updating")
            await advertiser.update(dataclasses.replace(advertiser.advert, version=arg))
            _emit("updated")
        elif command == "discover":
            nodes = await discover([ip], float(arg))
            _emit("discovered", nodes=[dataclasses.asdict(n) for n in nodes])
        elif command == "close":
            break
    _emit("closing")
    await advertiser.close()
    _emit("closed")


async def _browse(ip: str) -> None:
    zeroconf = open_zeroconf([ip])
    browser = Browser(
        zeroconf,
        lambda advert: _emit("seen", **dataclasses.asdict(advert)),
        lambda node_id: _emit("gone", node_id=node_id),
    )
    browser.start()
    _emit("browsing")
    commands = await _lines()
    while await commands.get() is not None:
        pass
    await browser.close()
    await zeroconf.async_close()


async def _discover(ip: str, seconds: str) -> None:
    nodes = await discover([ip], float(seconds))
    _emit("discovered", nodes=[dataclasses.asdict(n) for n in nodes])


def peer_main(argv: list[str]) -> None:
    """`advertise IP ID VERSION PORT CLUSTER` | `browse IP` | `discover IP SECONDS`."""
    match argv:
        case ["advertise", ip, node_id, version, port, cluster]:
            asyncio.run(_advertise(ip, node_id, version, port, cluster))
        case ["browse", ip]:
            asyncio.run(_browse(ip))
        case ["discover", ip, seconds]:
            asyncio.run(_discover(ip, seconds))
        case _:
            sys.exit(f"usage: {peer_main.__doc__}")


# Helpers for tests --------------------------------------------------------------


def peer_argv(*args: str) -> list[str]:
    """The command line of a peer."""
    return [sys.executable, "-m", PEER, *args]


def unique(prefix: str) -> str:
    """A node id no other run on this machine uses."""
    return f"{prefix}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def peers() -> Iterator[StartPeer]:
    """Starts peers in the root namespace; kills and reaps them afterwards."""
    started: list[Proc] = []

    def start(*args: str) -> Proc:
        proc = Proc(
            peer_argv(*args),
            label=f"peer {args[0]}",
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            start_new_session=True,
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill_group()
        proc.reap()


# Tests --------------------------------------------------------------------------


def test_zeroconf_is_bound_to_loopback_only() -> None:
    async def check() -> list[dict[str, Any]]:
        zeroconf = open_zeroconf([LOOPBACK])
        try:
            await zeroconf.zeroconf.async_wait_for_start()
            return bindings(zeroconf)
        finally:
            await zeroconf.async_close()

    sockets = asyncio.run(check())
    senders = [s for s in sockets if s["sender"]]
    assert senders, sockets
    assert all(s["family"] == "AF_INET" for s in sockets), sockets
    # Sending is what could leak onto a real network: every sender is pinned to lo.
    assert all(s["bound"] == LOOPBACK and s["multicast_if"] == LOOPBACK for s in senders), sockets


def test_two_advertisers_see_each_other_with_their_txt(peers: StartPeer) -> None:
    cluster = unique("cl")
    first, second = unique("a"), unique("b")
    a = peers("advertise", LOOPBACK, first, "1.0.0", "17001", cluster)
    b = peers("advertise", LOOPBACK, second, "2.0.0", "17002", cluster)
    for proc in (a, b):
        sockets = proc.expect_json(30, event="registered")["sockets"]
        assert {s["multicast_if"] for s in sockets if s["sender"]} == {LOOPBACK}, sockets

    def seen_by(proc: Proc) -> dict[str, dict[str, Any]]:
        proc.send("discover 1.5")
        nodes = proc.expect_json(30, event="discovered")["nodes"]
        return {n["node_id"]: n for n in nodes if n["cluster"] == cluster}

    expected = {
        first: {"node_id": first, "version": "1.0.0", "port": 17001, "cluster": cluster},
        second: {"node_id": second, "version": "2.0.0", "port": 17002, "cluster": cluster},
    }
    for proc in (a, b):
        seen = seen_by(proc)
        assert set(seen) == {first, second}, f"{proc.label} saw {seen}"
        for node_id, want in expected.items():
            # No gateway beyond loopback: the TXT record names none.
            no_gateway = {"gateway_port": 0, "gateway_scheme": ""}
            assert seen[node_id] == {**want, "addresses": [LOOPBACK], **no_gateway}


def test_update_is_seen_and_goodbye_removes_the_node(peers: StartPeer) -> None:
    node = unique("n")
    advertiser = peers("advertise", LOOPBACK, node, "1.0.0", "17003", "loop")
    advertiser.expect_json(30, event="registered")

    browser = peers("browse", LOOPBACK)
    started = browser.expect_json(30, event="browsing")["t"]
    seen = browser.expect_json(10, event="seen", node_id=node)
    assert (seen["version"], seen["port"]) == ("1.0.0", 17003)

    advertiser.send("update 1.1.0")
    updating = advertiser.expect_json(10, event="updating")["t"]
    advertiser.expect_json(10, event="updated")
    seen_update = browser.expect_json(10, event="seen", node_id=node, version="1.1.0")

    advertiser.send("close")
    closing = advertiser.expect_json(10, event="closing")["t"]
    gone = browser.expect_json(10, event="gone", node_id=node)["t"]
    advertiser.expect_json(10, event="closed")
    print(
        f"loopback: late browser saw the node in {seen['t'] - started:.3f} s, "
        f"the update in {seen_update['t'] - updating:.3f} s, "
        f"the goodbye in {gone - closing:.3f} s"
    )


def test_a_new_registration_is_seen_by_a_running_browser(peers: StartPeer) -> None:
    browser = peers("browse", LOOPBACK)
    browser.expect_json(30, event="browsing")
    node = unique("new")
    advertiser = peers("advertise", LOOPBACK, node, "1.0.0", "17004", "loop")
    registering = advertiser.expect_json(30, event="registering")["t"]
    seen = browser.expect_json(15, event="seen", node_id=node)["t"]
    print(f"loopback: a new registration was seen {seen - registering:.3f} s after it began")


if __name__ == "__main__":
    peer_main(sys.argv[1:])
