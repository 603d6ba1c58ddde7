"""The network lab itself: hosts reach each other, and its faults really bite.

Run as a module (`python -m tests.e2e.test_netlab serve|send|udp-count …`) it is
the tiny traffic tool the tests start inside the lab's hosts.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.netlab import LOCK_DIR, Host, Lab, Proc, sweep_stale

pytestmark = pytest.mark.netns

REPO = Path(__file__).resolve().parents[2]
PORT = 7000
UDP_PORT = 7001
SO_RCVBUFFORCE = 33  # Linux; the socket module does not name it


# Traffic tool run inside the hosts -----------------------------------------


def _serve(port: int) -> None:
    """Accept TCP connections; report each one's byte count and transfer time."""
    server = socket.create_server(("0.0.0.0", port), backlog=16)
    print("listening", flush=True)
    while True:
        conn, peer = server.accept()
        with conn:
            total, first = 0, 0.0
            while chunk := conn.recv(1 << 16):
                if not total:
                    first = time.monotonic()
                total += len(chunk)
            seconds = time.monotonic() - first if total else 0.0
            print(json.dumps({"peer": peer[0], "bytes": total, "seconds": seconds}), flush=True)


def _send(host: str, port: int, size: int) -> None:
    """Send `size` bytes over TCP, then wait for the receiver to close."""
    with socket.create_connection((host, port), timeout=30) as conn:
        conn.sendall(b"\0" * size)
        conn.shutdown(socket.SHUT_WR)
        conn.recv(1)
    print("sent", flush=True)


def _udp_count(port: int) -> None:
    """Count UDP datagrams until half a second passes without one."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    # Room for every datagram of a burst, so only the lab's loss drops any.
    sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 << 20)
    sock.bind(("0.0.0.0", port))
    print("listening", flush=True)
    sock.recv(64)
    count = 1
    sock.settimeout(0.5)
    try:
        while True:
            sock.recv(64)
            count += 1
    except TimeoutError:
        pass
    print(json.dumps({"count": count}), flush=True)


def _tool(host: Host, *args: str) -> Proc:
    return host.popen([sys.executable, "-m", "tests.e2e.test_netlab", *args], cwd=REPO)


def _server(host: Host) -> Proc:
    proc = _tool(host, "serve", str(PORT))
    proc.expect("^listening$", 15)
    return proc


def _connects(ip: str, timeout: float) -> bool:
    try:
        with socket.create_connection((ip, PORT), timeout=timeout):
            return True
    except OSError:
        return False


def _wait_connects(ip: str, within: float) -> float:
    """Seconds until a TCP connect to `ip` succeeds; fails after `within`."""
    start = time.monotonic()
    while time.monotonic() - start < within:
        if _connects(ip, 0.5):
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"no TCP connect to {ip}:{PORT} within {within} s")


def _transfer(sender: Host, server: Proc, receiver: Host, size: int) -> float:
    """Bytes per second of one TCP transfer, as timed by the receiver."""
    send = _tool(sender, "send", receiver.ip, str(PORT), str(size))
    report = json.loads(server.expect(r"^\{.*\}$", 60).group(0))
    send.expect("^sent$", 10)
    assert report["bytes"] == size, report
    return float(report["bytes"]) / max(float(report["seconds"]), 1e-6)


# Tests ----------------------------------------------------------------------


def _names() -> tuple[str, str]:
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True)
    netns = subprocess.run(["ip", "netns"], capture_output=True, text=True, check=True)
    return links.stdout, netns.stdout


def test_build_and_close_leave_nothing_behind() -> None:
    start = time.monotonic()
    lab = Lab()
    hosts = [lab.add_host(name) for name in ("a", "b", "c")]
    built = time.monotonic() - start
    links, netns = _names()
    assert lab.bridge in links
    assert all(h.veth in links and h.netns in netns for h in hosts)
    assert max(len(name) for name in [lab.bridge, *(h.veth for h in hosts)]) <= 15
    eth0 = hosts[0].run(["ip", "-o", "-4", "addr", "show", "dev", "eth0"]).stdout
    assert f"inet {hosts[0].ip}/24" in eth0
    assert "MULTICAST" in hosts[0].run(["ip", "link", "show", "dev", "eth0"]).stdout
    # A process that leaves its process group is still found through its namespace.
    escaper = _tool(hosts[0], "escape")
    orphan = int(escaper.expect(r"^\d+$", 15).group(0))

    start = time.monotonic()
    lab.close()
    closed = time.monotonic() - start
    lab.close()  # idempotent
    print(f"lab of 3 hosts: built in {built:.3f} s, removed in {closed:.3f} s")
    links, netns = _names()
    assert lab.tag not in links + netns
    assert escaper.poll() is not None
    assert not _alive(orphan), "a process that left its group survived close()"


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")


def test_a_killed_run_is_swept_and_interpreter_exit_cleans_up() -> None:
    script = (
        "from tests.netlab import Lab\n"
        "lab = Lab()\n"
        "lab.add_host('a')\n"
        "print(lab.tag, flush=True)\n"
        "import sys, time\n"
        "time.sleep(300) if sys.argv[1] == 'hang' else None\n"
    )
    # Interpreter exit without close(): the atexit hook removes the lab.
    done = subprocess.run(
        [sys.executable, "-c", script, "exit"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    tag = done.stdout.strip()
    assert re.fullmatch(r"ef[0-9a-f]{6}", tag), done.stdout
    assert tag not in "".join(_names())

    # SIGKILL: nothing runs in the process; the next sweep removes its leftovers.
    child = subprocess.Popen(
        [sys.executable, "-c", script, "hang"], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        tag = child.stdout.readline().strip()
        assert re.fullmatch(r"ef[0-9a-f]{6}", tag), tag
        assert tag in "".join(_names())
    finally:
        child.kill()
        child.wait(10)
    assert tag in sweep_stale()
    assert tag not in "".join(_names())
    assert not any(p.read_text().strip() == tag for p in LOCK_DIR.glob("*.lock"))


def test_hosts_reach_each_other_and_the_test_process(lab: Lab) -> None:
    a, b = lab.add_host("a"), lab.add_host("b")
    assert a.ip != b.ip
    assert lab.ip is not None
    server = _server(b)
    send = _tool(a, "send", b.ip, str(PORT), "1000")
    report = json.loads(server.expect(r"^\{.*\}$", 15).group(0))
    assert (report["peer"], report["bytes"]) == (a.ip, 1000)
    send.expect("^sent$", 10)
    # The test process reaches a host through the bridge address.
    with socket.create_connection((b.ip, PORT), timeout=5) as conn:
        assert conn.getsockname()[0] == lab.ip


def test_link_down_cuts_the_host_off_and_link_up_heals_it(lab: Lab) -> None:
    a = lab.add_host("a")
    _server(a)
    assert _connects(a.ip, 5)
    a.link_down()
    assert not _connects(a.ip, 1.0), "connected through a cut link"
    a.link_up()
    healed = _wait_connects(a.ip, within=10)
    print(f"connect after link_up: {healed:.3f} s")


def _connects_from(host: Host, ip: str) -> bool:
    probe = f"import socket; socket.create_connection(({ip!r}, {PORT}), timeout=1.0).close()"
    return host.run([sys.executable, "-c", probe], check=False).returncode == 0


def test_a_cut_between_two_addresses_spares_the_rest_of_the_lab(lab: Lab) -> None:
    a, b = lab.add_host("a"), lab.add_host("b")
    assert lab.ip is not None
    _server(a)
    assert _connects_from(b, a.ip)
    a.cut_from(b.ip)
    assert not _connects_from(b, a.ip), "b connected through the cut"
    assert _connects(a.ip, 5), "the cut also cut the test process off"
    a.heal_cuts()
    assert _connects_from(b, a.ip)
    # A cut of one port: the test process loses that port of `a`, b keeps it.
    a.cut_from(lab.ip, port=PORT)
    assert not _connects(a.ip, 1.0), "connected to a cut port"
    assert _connects_from(b, a.ip)
    a.heal_cuts()
    _wait_connects(a.ip, within=10)


def test_packet_loss_drops_traffic_and_clear_restores_it(lab: Lab) -> None:
    a = lab.add_host("a")
    _server(a)
    assert _connects(a.ip, 5)
    a.packet_loss(100)
    assert not _connects(a.ip, 1.0), "connected through 100 % loss"
    a.clear_loss()
    _wait_connects(a.ip, within=10)

    # Half the datagrams arrive (the inbound hook alone drops them here).
    a.packet_loss(50)
    counter = _tool(a, "udp-count", str(UDP_PORT))
    counter.expect("^listening$", 15)
    sent = 400
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _ in range(sent):
            sock.sendto(b"x", (a.ip, UDP_PORT))
            time.sleep(0.0005)
    got = json.loads(counter.expect(r"^\{.*\}$", 15).group(0))["count"]
    # Expected 200, standard deviation 10: these bounds are 10 deviations wide.
    assert 0.25 * sent < got < 0.75 * sent, f"{got}/{sent} datagrams arrived at 50 % loss"


def test_bandwidth_cap_limits_throughput_both_ways(lab: Lab) -> None:
    a, b = lab.add_host("a"), lab.add_host("b")
    server_a, server_b = _server(a), _server(b)
    size = 1 << 20
    cap = 16_000_000  # bit/s: 1 MiB takes about half a second
    free_in = _transfer(b, server_a, a, size)
    a.bandwidth(cap)
    capped_in = _transfer(b, server_a, a, size)  # into a: the bridge-side qdisc
    capped_out = _transfer(a, server_b, b, size)  # out of a: eth0's qdisc
    a.clear_bandwidth()
    free_again = _transfer(b, server_a, a, size)
    print(
        "throughput MB/s: "
        f"uncapped {free_in / 1e6:.1f}, capped in {capped_in / 1e6:.2f}, "
        f"capped out {capped_out / 1e6:.2f}, cleared {free_again / 1e6:.1f}"
    )
    # Ratios, not absolutes: a busy machine slows every transfer, but only a
    # working cap makes the capped ones several times slower than the free ones.
    for capped in (capped_in, capped_out):
        assert capped <= 1.5 * cap / 8, f"{capped * 8 / 1e6:.1f} Mbit/s through a 16 Mbit/s cap"
        assert min(free_in, free_again) >= 4 * capped


def _escape() -> None:
    """Start a child in a session of its own (so outside this process group)."""
    child = subprocess.Popen(["sleep", "300"], start_new_session=True)
    print(child.pid, flush=True)
    child.wait()


if __name__ == "__main__":
    command, *rest = sys.argv[1:]
    if command == "serve":
        _serve(int(rest[0]))
    elif command == "send":
        _send(rest[0], int(rest[1]), int(rest[2]))
    elif command == "udp-count":
        _udp_count(int(rest[0]))
    elif command == "escape":
        _escape()
    else:
        sys.exit(f"unknown command {command!r}")
