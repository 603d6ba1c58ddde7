"""A lab of test hosts in Linux network namespaces joined by a bridge.

Each `Lab` owns a bridge and, per host, a namespace with a veth pair whose inside
end is `eth0` with an address in a private /24 (10.77.<k>.0/24, `k` unique among
the labs alive on this machine). The test process may join the lab through the
bridge address `.254`. Faults: link cut (host-side veth down), a cut between a
host and one address (nftables inside the namespace), packet loss (nftables) and
a bandwidth cap (tc tbf on both ends of the host's veth). `Lab.close()` kills
every process the lab started, then removes the veths, the namespaces and the
bridge; it is idempotent and also runs at interpreter exit. What a killed run
left behind is removed by the next lab that takes its subnet, or by
`sweep_stale()`.

Needs root and iproute2 (plus nft for cuts and loss, tc for bandwidth). `lab_available()`
says why not, for `pytest.skip`.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import functools
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

SUBNET_PREFIX = "10.77"
# Held (flock) per subnet by the lab that uses it; also records the lab's name
# prefix so a successor can sweep what a killed owner left behind.
LOCK_DIR = Path("/run/edgefleet-netlab")
JOIN_HOST = 254
_SUBNETS = range(1, 251)


def _run(argv: Sequence[str], stdin: str | None = None, check: bool = True) -> str:
    done = subprocess.run(
        list(argv), input=stdin, capture_output=True, text=True, timeout=30, check=False
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")
    return done.stdout


def _ip(*args: str, stdin: str | None = None, check: bool = True) -> str:
    return _run(["ip", *args], stdin=stdin, check=check)


def _ip_batch(lines: Sequence[str], netns: str | None = None, check: bool = True) -> None:
    """Several `ip` commands in one process (lab builds stay well under 0.1 s)."""
    if not lines:
        return
    prefix = ["-n", netns] if netns else []
    force = [] if check else ["-force"]
    _ip(*prefix, *force, "-batch", "-", stdin="\n".join(lines) + "\n", check=check)


def _ipv6_off(ifname: str) -> None:
    # Bridge ports and the bridge itself need no IPv6: without it they send no
    # router solicitations or MLD reports into the lab.
    with contextlib.suppress(OSError):
        Path(f"/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6").write_text("1")


@functools.cache
def lab_available() -> str | None:
    """None when labs can be built here, else the reason (for `pytest.skip`)."""
    if not sys.platform.startswith("linux"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2 (ip) is not installed"
    probe = f"efprobe{os.getpid() & 0xFFFF:x}"
    # A probe of an earlier run killed halfway would make `add` fail.
    _ip("netns", "del", probe, check=False)
    _ip("link", "del", probe, check=False)
    try:
        _ip("netns", "add", probe)
        _ip("netns", "del", probe)
        _ip("link", "add", probe, "type", "bridge")
        _ip("link", "del", probe)
        LOCK_DIR.mkdir(parents=True, exist_ok=True)
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        return f"cannot build a network lab here: {exc}"
    return None


class Proc(subprocess.Popen[str]):
    """A started process whose output lines are collected by a reader thread.

    `expect` waits (bounded) for a line; failures carry the output tail.
    """

    def __init__(self, argv: Sequence[str], *, label: str, **kw: Any) -> None:
        super().__init__(list(argv), **kw)
        self.label = label
        self._lines: list[str] = []
        self._cursor = 0
        self._eof = False
        self._cond = threading.Condition()
        self._reader: threading.Thread | None = None
        if self.stdout is not None:
            self._reader = threading.Thread(
                target=self._read, args=(self.stdout,), name=f"out-{label}", daemon=True
            )
            self._reader.start()

    def _read(self, stream: IO[str]) -> None:
        with contextlib.suppress(ValueError, OSError):
            for line in stream:
                with self._cond:
                    self._lines.append(line.rstrip("\n"))
                    self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    @property
    def lines(self) -> list[str]:
        """Every output line so far."""
        with self._cond:
            return list(self._lines)

    def tail(self, count: int = 30) -> str:
        """The last output lines, for failure messages."""
        with self._cond:
            lines = self._lines[-count:]
        return "\n".join(f"  | {line}" for line in lines) or "  | (no output)"

    def expect(self, pattern: str, timeout: float) -> re.Match[str]:
        """The next line (after the last one matched) that matches `pattern`.

        Fails after `timeout` seconds, or when the output ends, with the tail.
        """
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for index in range(self._cursor, len(self._lines)):
                    match = regex.search(self._lines[index])
                    if match:
                        self._cursor = index + 1
                        return match
                self._cursor = len(self._lines)
                left = deadline - time.monotonic()
                if self._eof or left <= 0:
                    break
                self._cond.wait(left)
        why = f"exited with {self.poll()}" if self._eof else f"no match within {timeout:.1f} s"
        raise AssertionError(f"{self.label}: waiting for /{pattern}/: {why}\n{self.tail()}")

    def expect_json(self, timeout: float, **fields: object) -> dict[str, Any]:
        """The next JSON-object line whose `fields` have the given values."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.expect(r"^\{.*\}$", max(deadline - time.monotonic(), 0.0)).group(0)
            except AssertionError:
                wanted = ", ".join(f"{k}={v!r}" for k, v in fields.items())
                why = f"exited with {self.poll()}" if self._eof else f"none within {timeout:.1f} s"
                raise AssertionError(
                    f"{self.label}: waiting for a JSON line with {wanted}: {why}\n{self.tail()}"
                ) from None
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict) and all(record.get(k) == v for k, v in fields.items()):
                    return record

    def send(self, line: str) -> None:
        """Write one line to the process's stdin."""
        assert self.stdin is not None, f"{self.label} was started without a stdin pipe"
        self.stdin.write(line + "\n")
        self.stdin.flush()

    def kill_group(self) -> None:
        """SIGKILL the process group (the process and whatever it started)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)

    def reap(self, timeout: float = 5.0) -> None:
        """Wait for the process and its output reader."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.wait(timeout)
        if self._reader is not None:
            self._reader.join(timeout)
        for stream in (self.stdin, self.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


class Host:
    """One test host: a namespace whose `eth0` sits on the lab bridge."""

    def __init__(self, lab: Lab, name: str, index: int, netns: str, veth: str, ip: str) -> None:
        self.lab = lab
        self.name = name
        self.index = index
        self.netns = netns
        self.veth = veth
        self.ip = ip
        self._cuts: set[tuple[str, int]] = set()

    def __repr__(self) -> str:
        return f"Host({self.name!r}, ip={self.ip!r}, netns={self.netns!r})"

    def popen(self, argv: Sequence[str], **kw: Any) -> Proc:
        """Start `argv` inside the host, in its own process group, tracked by the lab.

        Defaults: stdin a pipe, stdout+stderr merged into a pipe read line by line.
        """
        label = kw.pop("label", f"{self.name}: {' '.join(argv[:3])}")
        return self.lab.popen(["ip", "netns", "exec", self.netns, *argv], label=label, **kw)

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float = 30.0,
        check: bool = True,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run `argv` inside the host to completion; output captured as text."""
        done = subprocess.run(
            ["ip", "netns", "exec", self.netns, *argv],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            raise RuntimeError(
                f"{self.name}: {' '.join(argv)} exited {done.returncode}: "
                f"{(done.stderr or done.stdout).strip()}"
            )
        return done

    # Faults -----------------------------------------------------------------

    def link_down(self) -> None:
        """Cut the host off: packets to and from it vanish silently."""
        _ip("link", "set", self.veth, "down")

    def link_up(self) -> None:
        """Heal a cut made by `link_down`."""
        _ip("link", "set", self.veth, "up")

    def packet_loss(self, percent: int) -> None:
        """Drop `percent`% of the packets the host sends and receives on eth0."""
        if not 0 <= percent <= 100:
            raise ValueError(f"loss must be 0..100 %, got {percent}")
        if percent == 0:
            self.clear_loss()
            return
        # nft rejects `< 100` (the value must fit mod 100): 100 % drops everything.
        verdict = "drop" if percent == 100 else f"numgen random mod 100 < {percent} drop"
        # `add` then `delete` makes the load idempotent; the new table replaces
        # the old one atomically within one nft transaction.
        ruleset = f"""
            add table inet edgefleet_loss
            delete table inet edgefleet_loss
            table inet edgefleet_loss {{
                chain input {{
                    type filter hook input priority -300;
                    iifname "eth0" {verdict}
                }}
                chain output {{
                    type filter hook output priority -300;
                    oifname "eth0" {verdict}
                }}
            }}
        """
        self.run(["nft", "-f", "-"], input=ruleset)

    def clear_loss(self) -> None:
        """Remove the packet loss."""
        self.run(["nft", "delete", "table", "inet", "edgefleet_loss"], check=False)

    def cut_from(self, address: str, port: int = 0) -> None:
        """Silently drop what this host and `address` send each other; the rest of the lab
        still reaches it (a partial partition). With `port`, only the traffic of that TCP
        port of this host (e.g. its API, while its other services stay reachable)."""
        ipaddress.IPv4Address(address)  # a clear error, not an nft syntax error
        if not 0 <= port <= 65535:
            raise ValueError(f"not a TCP port: {port}")
        self._cuts.add((address, port))
        self._load_cuts()

    def heal_cuts(self) -> None:
        """Remove every cut made by `cut_from`."""
        self._cuts.clear()
        self.run(["nft", "delete", "table", "inet", "edgefleet_cut"], check=False)

    def _load_cuts(self) -> None:
        inbound, outbound = [], []
        for address, port in sorted(self._cuts):
            only_in = f" tcp dport {port}" if port else ""
            only_out = f" tcp sport {port}" if port else ""
            inbound.append(f'iifname "eth0" ip saddr {address}{only_in} drop')
            outbound.append(f'oifname "eth0" ip daddr {address}{only_out} drop')
        # Loaded like the loss table: one transaction replaces the whole table.
        ruleset = f"""
            add table inet edgefleet_cut
            delete table inet edgefleet_cut
            table inet edgefleet_cut {{
                chain input {{
                    type filter hook input priority -300;
                    {"; ".join(inbound)}
                }}
                chain output {{
                    type filter hook output priority -300;
                    {"; ".join(outbound)}
                }}
            }}
        """
        self.run(["nft", "-f", "-"], input=ruleset)

    def bandwidth(self, bits_per_second: int) -> None:
        """Cap the host's link at `bits_per_second` each way (token bucket, tc tbf)."""
        if bits_per_second < 8000:
            raise ValueError(f"bandwidth below 8 kbit/s is not useful: {bits_per_second}")
        # A bucket of ~20 ms worth of traffic, never smaller than a few packets, so
        # the cap is smooth at low rates and still reachable at high ones.
        burst = max(bits_per_second // 8 // 50, 4 * 1514)
        tbf = ["tbf", "rate", f"{bits_per_second}bit", "burst", str(burst), "latency", "100ms"]
        # Leaving the host: eth0 inside. Entering it: the bridge-side end, which
        # sends towards the host.
        _run(["tc", "-n", self.netns, "qdisc", "replace", "dev", "eth0", "root", *tbf])
        _run(["tc", "qdisc", "replace", "dev", self.veth, "root", *tbf])

    def clear_bandwidth(self) -> None:
        """Remove the bandwidth cap."""
        _run(["tc", "-n", self.netns, "qdisc", "del", "dev", "eth0", "root"], check=False)
        _run(["tc", "qdisc", "del", "dev", self.veth, "root"], check=False)


_open_labs: set[Lab] = set()
_counter = 0
_counter_lock = threading.Lock()


@atexit.register
def _close_all() -> None:
    for lab in list(_open_labs):
        lab.close()


class Lab:
    """A bridge plus hosts; a context manager that removes everything on exit.

    `join=True` gives the bridge the address `.254` so the test process itself
    reaches the hosts (and the hosts reach it) through the lab.
    """

    def __init__(self, *, join: bool = True) -> None:
        reason = lab_available()
        if reason is not None:
            raise RuntimeError(reason)
        self.hosts: dict[str, Host] = {}
        self._procs: list[Proc] = []
        self._closed = False
        self._lock_file, k = self._claim_subnet()
        self.subnet = ipaddress.IPv4Network(f"{SUBNET_PREFIX}.{k}.0/24")
        self.tag = f"ef{k:02x}{os.getpid() & 0xFFFF:04x}"
        self.bridge = f"{self.tag}br"
        self.ip: str | None = str(self.subnet[JOIN_HOST]) if join else None
        self._lock_file.seek(0)
        self._lock_file.truncate()
        self._lock_file.write(self.tag)
        self._lock_file.flush()
        _open_labs.add(self)
        try:
            _ip(
                "link", "add", self.bridge, "type", "bridge",
                # No STP delay, no multicast snooping (mDNS floods to every
                # port), and bridged frames skip the machine's own firewall.
                "stp_state", "0", "mcast_snooping", "0",
                "nf_call_iptables", "0", "nf_call_ip6tables", "0", "nf_call_arptables", "0",
            )  # fmt: skip
            _ipv6_off(self.bridge)
            lines = [f"link set {self.bridge} multicast on up"]
            if self.ip is not None:
                lines.append(f"addr add {self.ip}/24 dev {self.bridge}")
            _ip_batch(lines)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Lab({self.subnet}, bridge={self.bridge!r}, hosts={list(self.hosts)})"

    @staticmethod
    def _claim_subnet() -> tuple[IO[str], int]:
        global _counter
        with _counter_lock:
            _counter += 1
            start = (os.getpid() * 7 + _counter) % len(_SUBNETS)
        taken = _ip("-4", "-o", "addr", "show")
        LOCK_DIR.mkdir(parents=True, exist_ok=True)
        for step in range(len(_SUBNETS)):
            k = _SUBNETS[(start + step) % len(_SUBNETS)]
            if f" {SUBNET_PREFIX}.{k}." in taken:
                continue  # used by this machine or by a lab that sees no lock dir
            handle = (LOCK_DIR / f"{k}.lock").open("a+")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            handle.seek(0)
            stale = handle.read().strip()
            if stale:
                _sweep(stale)
            return handle, k
        raise RuntimeError(f"no free test subnet under {SUBNET_PREFIX}.0.0/16")

    def popen(self, argv: Sequence[str], *, label: str = "lab", **kw: Any) -> Proc:
        """Start `argv` in the root namespace, in its own process group, tracked by the lab."""
        if self._closed:
            raise RuntimeError("lab is closed")
        kw.setdefault("stdin", subprocess.PIPE)
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.STDOUT)
        kw.setdefault("text", True)
        kw.setdefault("bufsize", 1)
        # Own process group, so close() kills whatever the process starts too.
        kw["start_new_session"] = True
        proc = Proc(argv, label=label, **kw)
        self._procs.append(proc)
        return proc

    def add_host(self, name: str) -> Host:
        """Create a host: namespace, veth to the bridge, eth0 with the next address."""
        if self._closed:
            raise RuntimeError("lab is closed")
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,39}", name):
            raise ValueError(f"host names are short lowercase words, got {name!r}")
        if name in self.hosts:
            raise ValueError(f"host {name!r} exists")
        index = len(self.hosts) + 1
        if index >= JOIN_HOST:
            raise ValueError("a lab holds at most 253 hosts")
        host = Host(
            self,
            name,
            index,
            netns=f"{self.tag}-{name}",
            veth=f"{self.tag}h{index}",
            ip=str(self.subnet[index]),
        )
        self.hosts[name] = host
        _ip_batch(
            [
                f"netns add {host.netns}",
                f"link add {host.veth} type veth peer name eth0 netns {host.netns}",
            ]
        )
        _ipv6_off(host.veth)
        _ip_batch([f"link set {host.veth} master {self.bridge} multicast on up"])
        _ip_batch(
            [
                "link set lo multicast on up",
                f"addr add {host.ip}/24 dev eth0",
                "link set eth0 multicast on up",
            ],
            netns=host.netns,
        )
        return host

    def close(self) -> None:
        """Kill the lab's processes, then remove veths, namespaces and bridge."""
        if self._closed:
            return
        self._closed = True
        for proc in self._procs:
            proc.kill_group()
        # Anything that left its process group still lives in a namespace.
        for host in self.hosts.values():
            pids = _ip("netns", "pids", host.netns, check=False).split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
        for proc in self._procs:
            proc.reap()
        # The host-side veth first: `ip netns del` frees its end asynchronously.
        _ip_batch([f"link del {h.veth}" for h in self.hosts.values()], check=False)
        _ip_batch([f"netns del {h.netns}" for h in self.hosts.values()], check=False)
        _ip_batch([f"link del {self.bridge}"], check=False)
        _open_labs.discard(self)
        with contextlib.suppress(OSError, ValueError):
            self._lock_file.seek(0)
            self._lock_file.truncate()
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()


def sweep_stale() -> list[str]:
    """Remove what labs of killed runs left behind; the names of the labs swept."""
    if not LOCK_DIR.is_dir():
        return []
    swept = []
    for path in sorted(LOCK_DIR.glob("*.lock")):
        with path.open("a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live lab holds it
            handle.seek(0)
            stale = handle.read().strip()
            if stale:
                _sweep(stale)
                handle.seek(0)
                handle.truncate()
                swept.append(stale)
    return swept


def _sweep(tag: str) -> None:
    """Remove the interfaces and namespaces a killed lab named `tag` left behind."""
    if not re.fullmatch(r"ef[0-9a-f]{6}", tag):
        return
    links = re.findall(r"^\d+: ([^:@\s]+)", _ip("-o", "link", "show", check=False), re.M)
    namespaces = [line.split()[0] for line in _ip("netns", "list", check=False).splitlines()]
    owned = [n for n in namespaces if n.startswith(f"{tag}-")]
    for netns in owned:
        for pid in _ip("netns", "pids", netns, check=False).split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
    veths = [n for n in links if n.startswith(tag) and n != f"{tag}br"]
    _ip_batch([f"link del {name}" for name in veths], check=False)
    _ip_batch([f"netns del {name}" for name in owned], check=False)
    if f"{tag}br" in links:
        _ip_batch([f"link del {tag}br"], check=False)
